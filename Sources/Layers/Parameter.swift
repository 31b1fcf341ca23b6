import TensorCore

/// A trainable tensor with its gradient and its state-dict key (e.g. `encoder.block1.0.attn.q.weight`).
public final class Parameter: @unchecked Sendable {
    public let name: String
    public let value: Tensor
    /// dLoss/dvalue; layers accumulate into it with `+=`.
    public let grad: Tensor

    public init(name: String, shape: [Int]) {
        self.name = name
        value = Tensor(zeros: shape)
        grad = Tensor(zeros: shape)
    }

    public var shape: [Int] { value.shape }

    public func zeroGrad() { grad.fill(0) }
}

/// A non-trainable state tensor saved in the state dict (BatchNorm running statistics).
public final class Buffer: @unchecked Sendable {
    public let name: String
    public let value: Tensor
    public init(name: String, shape: [Int]) {
        self.name = name
        value = Tensor(zeros: shape)
    }
}

/// Joins state-dict key parts with dots, skipping empty ones.
@inline(__always) public func key(_ parts: String...) -> String {
    parts.filter { !$0.isEmpty }.joined(separator: ".")
}

/// Errors raised by layers when called out of order or with wrongly shaped inputs.
public enum LayerError: Error, CustomStringConvertible {
    case backwardBeforeForward(String)
    case badInput(layer: String, shape: [Int], expected: String)

    public var description: String {
        switch self {
        case let .backwardBeforeForward(l): return "\(l): backward called before forward"
        case let .badInput(l, s, e): return "\(l): input shape \(s), expected \(e)"
        }
    }
}

/// Whether layer forwards keep what their backward needs. Inference and the no-grad CAM passes turn
/// it off, so their activations are freed as soon as the next layer has consumed them.
public enum GradMode {
    nonisolated(unsafe) public private(set) static var isEnabled = true

    /// Runs `body` with caching off (restored afterwards).
    public static func withoutGrad<T>(_ body: () throws -> T) rethrows -> T {
        let before = isEnabled
        isEnabled = false
        defer { isEnabled = before }
        return try body()
    }
}
