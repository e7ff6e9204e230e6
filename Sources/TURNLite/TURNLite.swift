import STUNLite
