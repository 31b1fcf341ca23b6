import TensorCore

/// Collects named intermediates of a training step (golden key names) when verification asks for
/// them; the training loop passes nil and records nothing.
public final class Recorder {
    public private(set) var floats: [String: Tensor] = [:]
    public private(set) var ints: [String: (shape: [Int], values: [Int32])] = [:]

    public init() {}

    public func add(_ key: String, _ t: Tensor) { floats[key] = t.copy() }
    public func add(_ key: String, shape: [Int], _ values: [Int32]) { ints[key] = (shape, values) }
}
