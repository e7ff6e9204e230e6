import Traversal
