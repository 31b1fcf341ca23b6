import Layers
import TensorCore

/// Everything the main forward produces.
public struct AFAOutput {
    /// Class scores (B, numClasses − 1): global max pool of stage 4, then the classifier.
    public var cls: Tensor
    /// Segmentation logits (B, numClasses, H/4, W/4), before upsampling.
    public var seg: Tensor
    /// Raw attention logits q·kᵀ of every block (B, heads, N', M), pooled over sr×sr query cells.
    public var attns: [Tensor]
    /// Predicted affinity (B, N4, N4) from the last two blocks' attention.
    public var attnPred: Tensor
    /// Stage outputs, channels-last (B, h_i, w_i, C_i).
    public var stages: [Tensor]
}

/// The AFA network: MiT encoder, SegFormer head, classifier (CAM) and the attention-to-affinity head,
/// with a hand-written backward pass. Parameters carry the original PyTorch state-dict keys.
public final class AFAModel {
    public let config: ModelConfig
    public let encoder: MixTransformer
    public let decoder: SegFormerHead
    public let affinityHead: AffinityHead
    /// `classifier.weight` (numClasses − 1, C4, 1, 1), no bias.
    public let classifier: Linear
    let pool = GlobalMaxPool()
    /// Drives dropout and drop-path.
    public var rng: RNG
    public private(set) var training = true

    public init(config: ModelConfig, seed: UInt64 = 0) throws {
        try config.validate()
        self.config = config
        encoder = MixTransformer(config: config)
        decoder = SegFormerHead(config: config)
        affinityHead = AffinityHead(channels: config.affinityChannels)
        classifier = Linear(name: "classifier", in: config.embedDims[3], out: config.numClasses - 1, bias: false, asConv1x1: true)
        rng = RNG(seed: seed)
    }

    /// All trainable parameters in state-dict order.
    public var parameters: [Parameter] {
        encoder.parameters + decoder.parameters + affinityHead.parameters + classifier.parameters
    }

    /// Non-trainable state (BatchNorm running statistics).
    public var buffers: [Buffer] { decoder.bn.buffers }

    /// Train mode: BatchNorm uses batch statistics, dropout and drop-path are active.
    public func setTraining(_ t: Bool) {
        training = t
        encoder.setTraining(t)
        decoder.setTraining(t)
    }

    public func zeroGrad() { for p in parameters { p.zeroGrad() } }

    /// The main forward. `image`: normalised NCHW (B, 3, H, W).
    public func forward(_ image: Tensor) throws -> AFAOutput {
        let (stages, attns) = try encoder.forward(image, rng: &rng)
        let pred = try affinityHead.forward(Array(attns.suffix(2)))
        let seg = try decoder.forward(stages, rng: &rng)
        let s4 = stages[3]
        let pooled = try pool.forward(try s4.reshaped([s4.shape[0], s4.shape[1] * s4.shape[2], s4.shape[3]]))
        let cls = try classifier.forward(pooled)
        return AFAOutput(cls: cls, seg: seg, attns: attns, attnPred: pred, stages: stages)
    }

    /// The CAM-only forward: encoder, classifier as a 1×1 conv on stage 4 (no pooling) and the affinity
    /// prediction; the decoder is not run. Returns CAMs (B, numClasses − 1, h4, w4) and the affinity.
    /// Nothing is kept for a backward pass (the layers' caches are cleared).
    public func camForward(_ image: Tensor) throws -> (cam: Tensor, attnPred: Tensor) {
        try GradMode.withoutGrad {
            let (stages, attns) = try encoder.forward(image, rng: &rng)
            let pred = try affinityHead.forward(Array(attns.suffix(2)))
            return (try classActivationMap(stages[3]), pred)
        }
    }

    /// The classifier applied at every stage-4 position: (B, h, w, C4) → (B, numClasses − 1, h, w).
    public func classActivationMap(_ stage4: Tensor) throws -> Tensor {
        let (b, h, w, c) = (stage4.shape[0], stage4.shape[1], stage4.shape[2], stage4.shape[3])
        let k = config.numClasses - 1
        let cam = Tensor(zeros: [b, h, w, k])
        sgemm(.none, .transposed, m: b * h * w, n: k, k: c, a: stage4.data, lda: c,
              b: classifier.weight.value.data, ldb: c, c: cam.data, ldc: k)
        return try cam.permuted([0, 3, 1, 2])
    }

    /// Backward of the last `forward` from the gradients of its outputs (nil = zero); parameter
    /// gradients accumulate. Returns the image gradient.
    @discardableResult
    public func backward(dCls: Tensor?, dSeg: Tensor?, dAttnPred: Tensor?) throws -> Tensor {
        var dStages: [Tensor?] = [nil, nil, nil, nil]
        if let dSeg { dStages = try decoder.backward(dSeg) }
        if let dCls {
            let dPooled = try classifier.backward(dCls)
            let d4 = try pool.backward(dPooled)
            let s4 = dStages[3] ?? Tensor(zeros: encoder.stageShape(3))
            try s4.addScaled(try d4.reshaped(s4.shape))
            dStages[3] = s4
        }
        var dAttns = [Tensor?](repeating: nil, count: config.depths.reduce(0, +))
        if let dAttnPred {
            let d = try affinityHead.backward(dAttnPred)
            dAttns[dAttns.count - 2] = d[0]
            dAttns[dAttns.count - 1] = d[1]
        }
        return try encoder.backward(dStages: dStages, dAttns: dAttns)
    }

    /// Frees the activations cached for backward.
    public func releaseCaches() {
        encoder.release(); decoder.release(); affinityHead.release(); classifier.release()
    }
}
