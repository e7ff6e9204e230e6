/// The version of the Traversal library.
public enum TraversalVersion {
    /// Semantic version string of this build.
    public static let string = "0.1.0"
}
