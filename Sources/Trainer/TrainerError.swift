public import GraftCore

/// What the training engine refuses, each with a message a user can act on.
public enum TrainerError: Error, CustomStringConvertible {
    /// An architecture that cannot be built (bad spec, shapes that do not fit).
    case architecture(String)
    /// A state tensor that does not fit the network.
    case state(String)
    /// A dataset that cannot be read or selected.
    case data(String)
    /// A training setting out of range.
    case configuration(String)
    /// A registry error on the way.
    case registry(GraftError)

    public var description: String {
        switch self {
        case .architecture(let message): "architecture: \(message)"
        case .state(let message): "checkpoint: \(message)"
        case .data(let message): "data: \(message)"
        case .configuration(let message): message
        case .registry(let error): error.description
        }
    }
}
