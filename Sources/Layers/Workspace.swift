import TensorCore

/// Where backward passes accumulate parameter gradients: one tensor per parameter, created for the
/// parameters a training run updates. Inference never makes one, so a served model holds its weights
/// once.
public final class Gradients {
    private var store: [ObjectIdentifier: Tensor] = [:]
    /// The parameters in the order given (state-dict order for a model).
    public let parameters: [Parameter]
    /// Every gradient, one after another in parameter order: the per-parameter tensors are views
    /// into it, so a data-parallel step reduces the whole store with one collective call.
    public let flat: Tensor

    public init(for parameters: [Parameter]) {
        self.parameters = parameters
        let total = parameters.reduce(0) { $0 + $1.value.count }
        flat = Tensor(zeros: [total])
        var offset = 0
        for p in parameters {
            store[ObjectIdentifier(p)] = Tensor(storage: flat.storage, offset: offset, shape: p.shape)
            offset += p.value.count
        }
    }

    /// dLoss/dp; backward passes add into it.
    public subscript(_ p: Parameter) -> Tensor {
        guard let g = store[ObjectIdentifier(p)] else {
            preconditionFailure("no gradient buffer for \(p.name): the store was made for other parameters")
        }
        return g
    }

    public func zero() { flat.fill(0) }

    /// self += other (a store made for the same parameters).
    public func add(_ other: Gradients) {
        precondition(other.flat.count == flat.count, "gradient stores of different models")
        Kernels.add(flat.data, other.flat.data, flat.data, flat.count)
    }

    /// self *= factor.
    public func scale(by factor: Float) {
        Kernels.scale(flat.data, factor, flat.data, flat.count)
    }
}

/// The per-call state of a pass, owned by the caller: the mode (train or eval), whether layers keep
/// what their backward needs, the random stream of dropout and drop-path, the kept activations and,
/// for training, the gradient store.
///
/// A training loop keeps one workspace and `reset`s it after each backward; an inference call makes
/// its own (cheap: nothing is kept). Workspaces are not shared between threads — the modules are.
public final class Workspace {
    public enum Mode: Sendable { case training, inference }

    public let mode: Mode
    /// Whether forwards keep their backward state. Off for inference and the no-grad CAM passes.
    public private(set) var recording: Bool
    /// Drives dropout and drop-path (train mode only).
    public var rng: RNG
    /// Where backward accumulates; nil for a workspace that never runs backward. A data-parallel
    /// step that computes several shards points it at each shard's store in turn.
    public var gradients: Gradients?

    /// What each layer saved, keyed by the layer, most recent last: a layer called twice in one
    /// pass has its backward called in reverse order.
    private var saved: [ObjectIdentifier: [Any]] = [:]

    public init(mode: Mode, recording: Bool, rng: RNG = RNG(seed: 0), gradients: Gradients? = nil) {
        self.mode = mode
        self.recording = recording
        self.rng = rng
        self.gradients = gradients
    }

    /// A workspace for inference: eval mode, nothing kept.
    public static func inference() -> Workspace { Workspace(mode: .inference, recording: false) }

    /// A workspace for training: train mode, activations kept, gradients into `gradients`.
    public static func training(gradients: Gradients, rng: RNG) -> Workspace {
        Workspace(mode: .training, recording: true, rng: rng, gradients: gradients)
    }

    public var isTraining: Bool { mode == .training }

    /// Runs `body` with recording off (the no-grad CAM passes of a training step), then restores it.
    public func withoutRecording<T>(_ body: () throws -> T) rethrows -> T {
        let before = recording
        recording = false
        defer { recording = before }
        return try body()
    }

    /// Keeps `state` for `layer`'s backward (nothing when not recording).
    public func save(_ state: Any, for layer: AnyObject) {
        guard recording else { return }
        saved[ObjectIdentifier(layer), default: []].append(state)
    }

    /// Takes back the most recent state `layer` saved.
    public func take<T>(_ type: T.Type, for layer: AnyObject, name: @autoclosure () -> String) throws -> T {
        let id = ObjectIdentifier(layer)
        guard let state = saved[id]?.popLast() as? T else { throw LayerError.backwardBeforeForward(name()) }
        return state
    }

    /// The most recent state `layer` saved, left in place (for a caller that rebuilds something from it
    /// before the layer's own backward takes it).
    public func peek<T>(_ type: T.Type, for layer: AnyObject, name: @autoclosure () -> String) throws -> T {
        guard let state = saved[ObjectIdentifier(layer)]?.last as? T else { throw LayerError.backwardBeforeForward(name()) }
        return state
    }

    /// The gradient buffer of `p`.
    public func gradient(_ p: Parameter) throws -> Tensor {
        guard let g = gradients else { throw LayerError.noGradients(p.name) }
        return g[p]
    }

    /// Drops every kept activation (after backward, or to abandon a pass), keeping the table's capacity.
    public func reset() { saved.removeAll(keepingCapacity: true) }

    /// Number of layer states currently kept (0 after a complete backward).
    public var savedCount: Int { saved.values.reduce(0) { $0 + $1.count } }
}
