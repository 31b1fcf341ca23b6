import Synchronization
import TensorCore

/// A trainable tensor and its state-dict key (e.g. `encoder.block1.0.attn.q.weight`).
///
/// The value is shared by every pass that uses the layer; only an optimiser step (or loading a
/// checkpoint) writes it. Gradients live apart, in a `Gradients` store that training owns, so a model
/// used for inference holds its weights once.
public final class Parameter: Sendable {
    public let name: String
    public let value: Tensor

    public init(name: String, shape: [Int]) {
        self.name = name
        value = Tensor(zeros: shape)
    }

    public var shape: [Int] { value.shape }
}

/// A non-trainable state tensor saved in the state dict (BatchNorm running statistics). A training
/// forward updates it; inference only reads it.
public final class Buffer: Sendable {
    public let name: String
    public let value: Tensor
    public init(name: String, shape: [Int]) {
        self.name = name
        value = Tensor(zeros: shape)
    }
}

/// A 64-bit counter in the state dict (`num_batches_tracked`), updated by training forwards.
public final class Counter: Sendable {
    public let name: String
    private let count = Mutex<Int64>(0)
    public init(name: String) { self.name = name }
    public var value: Int64 {
        get { count.withLock { $0 } }
        set { count.withLock { $0 = newValue } }
    }
    func increment() { count.withLock { $0 += 1 } }
}

/// Joins state-dict key parts with dots, skipping empty ones.
@inline(__always) public func key(_ parts: String...) -> String {
    parts.filter { !$0.isEmpty }.joined(separator: ".")
}

/// Errors raised by layers when called out of order or with wrongly shaped inputs.
public enum LayerError: Error, CustomStringConvertible {
    case backwardBeforeForward(String)
    case badInput(layer: String, shape: [Int], expected: String)
    case noGradients(String)

    public var description: String {
        switch self {
        case let .backwardBeforeForward(l): return "\(l): backward called without a recorded forward in this workspace"
        case let .badInput(l, s, e): return "\(l): input shape \(s), expected \(e)"
        case let .noGradients(l): return "\(l): backward needs a workspace with a gradient store"
        }
    }
}
