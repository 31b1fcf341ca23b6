import Layers
import TensorCore

/// Everything the main forward produces.
public struct AFAOutput {
    /// Class scores (B, numClasses − 1): global max pool of stage 4, then the classifier.
    public var cls: Tensor
    /// Segmentation logits (B, numClasses, H/4, W/4), before upsampling.
    public var seg: Tensor
    /// Raw attention logits q·kᵀ (B, heads, N', M), pooled over sr×sr query cells, of every block in
    /// order when `allAttentions` is asked; otherwise empty: the affinity head has consumed the last
    /// two blocks' (quadratic in the stage-4 tokens: 134 MB for a 512² image and its flip), and letting
    /// them go before the decoder runs keeps them out of the pass's peak memory.
    public var attns: [Tensor]
    /// Predicted affinity (B, N4, N4) from the last two blocks' attention.
    public var attnPred: Tensor
    /// Stage outputs, channels-last (B, h_i, w_i, C_i).
    public var stages: [Tensor]
}

/// The AFA network: MiT encoder, SegFormer head, classifier (CAM) and the attention-to-affinity head,
/// with a hand-written backward pass. Parameters carry the original PyTorch state-dict keys.
///
/// The model holds structure and weights only; every pass takes a `Workspace` that carries its mode,
/// random stream, kept activations and gradients. One model can therefore serve concurrent inference
/// calls; a training loop owns its model (the optimiser writes the weights between steps).
public final class AFAModel: Module {
    public let config: ModelConfig
    public let encoder: MixTransformer
    public let decoder: SegFormerHead
    public let affinityHead: AffinityHead
    /// `classifier.weight` (numClasses − 1, C4, 1, 1), no bias.
    public let classifier: Linear
    let pool = GlobalMaxPool()
    /// The leaves found once by reflection: the structure never changes after `init`, and loading or
    /// saving a state dict, the optimiser and the checks all ask for them.
    private let state: StateIndex

    /// A struct (not an array) so that reflection over the model does not count these leaves twice.
    private struct StateIndex {
        var parameters: [Parameter] = [], buffers: [Buffer] = [], counters: [Counter] = []
    }

    public init(config: ModelConfig) throws {
        try config.validate()
        self.config = config
        encoder = MixTransformer(config: config)
        decoder = SegFormerHead(config: config)
        affinityHead = AffinityHead(channels: config.affinityChannels)
        classifier = Linear(name: "classifier", in: config.embedDims[3], out: config.numClasses - 1, bias: false, asConv1x1: true)
        // The model itself has no leaves, only children (in declaration order); a test checks that this
        // index equals what reflection over the whole model finds.
        let parts: [any Module] = [encoder, decoder, affinityHead, classifier, pool]
        state = StateIndex(parameters: parts.flatMap(\.parameters), buffers: parts.flatMap(\.buffers), counters: parts.flatMap(\.counters))
    }

    /// Every trainable parameter in state-dict order (found once, at `init`).
    public var parameters: [Parameter] { state.parameters }
    /// Every buffer in state-dict order.
    public var buffers: [Buffer] { state.buffers }
    /// Every counter (`num_batches_tracked`) in state-dict order.
    public var counters: [Counter] { state.counters }

    /// A gradient store for every parameter (what a training workspace needs).
    public func makeGradients() -> Gradients { Gradients(for: parameters) }

    /// Index of the first block whose raw attention logits the affinity head reads.
    var firstHeadBlock: Int { config.depths.reduce(0, +) - 2 }

    /// The main forward. `image`: normalised NCHW (B, 3, H, W). `allAttentions` also returns the raw
    /// attention logits of every block (a recorded step compares them with the reference).
    public func forward(_ image: Tensor, _ ws: Workspace, allAttentions: Bool = false) throws -> AFAOutput {
        let stages: [Tensor]
        var attns: [Tensor]
        (stages, attns) = try encoder.forward(image, ws, rawFrom: allAttentions ? 0 : firstHeadBlock)
        let pred = try affinityHead.forward(Array(attns.suffix(2)), ws)
        if !allAttentions { attns = [] }     // consumed (a recording head keeps its own references)
        let seg = try decoder.forward(stages, ws)
        let cls = try classScores(stages[3], ws)
        return AFAOutput(cls: cls, seg: seg, attns: attns, attnPred: pred, stages: stages)
    }

    /// What a segmentation request that asks for no CAMs or affinity reads: the segmentation logits,
    /// the class scores and stage 4, without the affinity head (no raw attention logits are pooled).
    /// Bit-equal to the same outputs of `forward`. Keeps nothing, so `ws` must not be recording.
    public func segmentationForward(_ image: Tensor, _ ws: Workspace) throws -> (seg: Tensor, cls: Tensor, stage4: Tensor) {
        guard !ws.recording else { throw AFAError.invalidInput("segmentationForward keeps nothing for backward; use forward to train") }
        let (stages, _) = try encoder.forward(image, ws, rawFrom: .max)
        return (try decoder.forward(stages, ws), try classScores(stages[3], ws), stages[3])
    }

    /// Global max pool of stage 4, then the classifier: (B, numClasses − 1).
    private func classScores(_ s4: Tensor, _ ws: Workspace) throws -> Tensor {
        ws.save(s4.shape, for: self)
        let pooled = try pool.forward(try s4.reshaped([s4.shape[0], s4.shape[1] * s4.shape[2], s4.shape[3]]), ws)
        return try classifier.forward(pooled, ws)
    }

    /// The CAM-only forward: encoder, classifier as a 1×1 conv on stage 4 (no pooling) and, with
    /// `affinity`, the affinity prediction; the decoder is not run. Returns CAMs (B, numClasses − 1, h4, w4)
    /// and the affinity (nil without `affinity`: then no block keeps its (N, N) logits either).
    /// Runs in the workspace's mode and random stream but keeps nothing for backward.
    public func camForward(_ image: Tensor, _ ws: Workspace, affinity: Bool = true) throws -> (cam: Tensor, attnPred: Tensor?) {
        try ws.withoutRecording {
            let (stages, attns) = try encoder.forward(image, ws, rawFrom: affinity ? firstHeadBlock : Int.max)
            let pred = affinity ? try affinityHead.forward(Array(attns.suffix(2)), ws) : nil
            return (try classActivationMap(stages[3]), pred)
        }
    }

    /// The classifier applied at every stage-4 position: (B, h, w, C4) → (B, numClasses − 1, h, w).
    public func classActivationMap(_ stage4: Tensor) throws -> Tensor {
        let (b, h, w, c) = (stage4.shape[0], stage4.shape[1], stage4.shape[2], stage4.shape[3])
        let k = config.numClasses - 1
        let cam = Tensor(uninitialized: [b, h, w, k])
        sgemm(.none, .transposed, m: b * h * w, n: k, k: c, a: stage4.data, lda: c,
              b: classifier.weight.value.data, ldb: c, c: cam.data, ldc: k)
        return try cam.permuted([0, 3, 1, 2])
    }

    /// Backward of the `forward` recorded in `ws` from the gradients of its outputs (nil = zero);
    /// parameter gradients accumulate into the workspace's store. Returns the image gradient.
    @discardableResult
    public func backward(dCls: Tensor?, dSeg: Tensor?, dAttnPred: Tensor?, _ ws: Workspace) throws -> Tensor {
        let s4Shape = try ws.take([Int].self, for: self, name: "AFA model")
        var dStages: [Tensor?] = [nil, nil, nil, nil]
        if let dSeg { dStages = try decoder.backward(dSeg, ws) }
        if let dCls {
            let dPooled = try classifier.backward(dCls, ws)
            let d4 = try pool.backward(dPooled, ws)
            let s4 = dStages[3] ?? Tensor(zeros: s4Shape)
            try s4.addScaled(try d4.reshaped(s4.shape))
            dStages[3] = s4
        }
        var dAttns = [Tensor?](repeating: nil, count: config.depths.reduce(0, +))
        if let dAttnPred {
            let d = try affinityHead.backward(dAttnPred, ws)
            dAttns[dAttns.count - 2] = d[0]
            dAttns[dAttns.count - 1] = d[1]
        }
        return try encoder.backward(dStages: dStages, dAttns: dAttns, ws)
    }
}
