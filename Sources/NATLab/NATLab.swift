/// Namespace for the NAT lab: real kernel NAT in Linux network namespaces (see `Scripts/natlab.sh`).
public enum NATLab {}
