import Layers
import TensorCore

/// Overlapping patch embedding: a strided convolution (k7 s4 p3 for stage 1, k3 s{stride} p1 after),
/// then LayerNorm over channels. Channels-last map in, tokens (B, h·w, C) out.
public final class OverlapPatchEmbed {
    public let proj: Conv2d
    public let norm: LayerNorm
    private var outShape: [Int] = []

    init(name: String, in inCh: Int, out outCh: Int, kernel: Int, stride: Int, eps: Float) {
        proj = Conv2d(name: key(name, "proj"), in: inCh, out: outCh, kernel: kernel, stride: stride, padding: kernel / 2)
        norm = LayerNorm(name: key(name, "norm"), features: outCh, eps: eps)
    }

    var parameters: [Parameter] { proj.parameters + norm.parameters }

    /// Returns tokens and the grid size.
    func forward(_ x: Tensor) throws -> (Tensor, Int, Int) {
        let y = try proj.forward(x)
        outShape = y.shape
        let tokens = try norm.forward(try y.reshaped([y.shape[0], y.shape[1] * y.shape[2], y.shape[3]]))
        return (tokens, y.shape[1], y.shape[2])
    }

    func backward(_ dTokens: Tensor) throws -> Tensor {
        let dy = try norm.backward(dTokens)
        return try proj.backward(try dy.reshaped(outShape))
    }

    func release() { proj.release(); norm.release() }
}

/// Mix-FFN: Linear(C→rC), depthwise 3×3 conv on the token grid, exact GELU, Linear(rC→C).
public final class MixFFN {
    public let fc1: Linear, dwconv: DepthwiseConv3x3, fc2: Linear
    let act = GELU()
    private var grid: (Int, Int, Int) = (0, 0, 0)

    init(name: String, dim: Int, hidden: Int) {
        fc1 = Linear(name: key(name, "fc1"), in: dim, out: hidden)
        dwconv = DepthwiseConv3x3(name: key(name, "dwconv.dwconv"), channels: hidden)
        fc2 = Linear(name: key(name, "fc2"), in: hidden, out: dim)
    }

    var parameters: [Parameter] { fc1.parameters + dwconv.parameters + fc2.parameters }

    func forward(_ x: Tensor, h: Int, w: Int) throws -> Tensor {
        let b = x.shape[0]
        grid = (b, h, w)
        let a = try fc1.forward(x)
        let c = try dwconv.forward(try a.reshaped([b, h, w, fc1.outFeatures]))
        let g = act.forward(try c.reshaped([b, h * w, fc1.outFeatures]))
        return try fc2.forward(g)
    }

    func backward(_ dy: Tensor) throws -> Tensor {
        let (b, h, w) = grid
        let dg = try fc2.backward(dy)
        let dc = try act.backward(dg)
        let da = try dwconv.backward(try dc.reshaped([b, h, w, fc1.outFeatures]))
        return try fc1.backward(try da.reshaped([b, h * w, fc1.outFeatures]))
    }

    func release() { fc1.release(); dwconv.release(); act.release(); fc2.release() }
}

/// Transformer block: x = x + DropPath(Attn(LN(x))); x = x + DropPath(FFN(LN(x))).
public final class TransformerBlock {
    public let norm1: LayerNorm, attn: EfficientAttention, norm2: LayerNorm, mlp: MixFFN
    let dropPath1: Dropout, dropPath2: Dropout

    init(name: String, dim: Int, heads: Int, sr: Int, mlpRatio: Int, blockEps: Float, embedEps: Float, dropPath: Float) {
        norm1 = LayerNorm(name: key(name, "norm1"), features: dim, eps: blockEps)
        attn = EfficientAttention(name: key(name, "attn"), dim: dim, heads: heads, srRatio: sr, normEps: embedEps)
        norm2 = LayerNorm(name: key(name, "norm2"), features: dim, eps: blockEps)
        mlp = MixFFN(name: key(name, "mlp"), dim: dim, hidden: dim * mlpRatio)
        dropPath1 = Dropout(rate: dropPath, mode: .samples)
        dropPath2 = Dropout(rate: dropPath, mode: .samples)
    }

    var parameters: [Parameter] { norm1.parameters + attn.parameters + norm2.parameters + mlp.parameters }

    func setTraining(_ t: Bool) { dropPath1.training = t; dropPath2.training = t }

    /// Returns the block output and the raw attention logits.
    func forward(_ x: Tensor, h: Int, w: Int, rng: inout RNG) throws -> (Tensor, Tensor) {
        let (a, raw) = try attn.forward(try norm1.forward(x), h: h, w: w)
        let x1 = try x.adding(dropPath1.forward(a, rng: &rng))
        let f = try mlp.forward(try norm2.forward(x1), h: h, w: w)
        let x2 = try x1.adding(dropPath2.forward(f, rng: &rng))
        return (x2, raw)
    }

    func backward(_ dy: Tensor, dRaw: Tensor?) throws -> Tensor {
        let dx1 = try norm2.backward(try mlp.backward(dropPath2.backward(dy)))
        try dx1.addScaled(dy)
        let dx = try norm1.backward(try attn.backward(dropPath1.backward(dx1), dRaw: dRaw))
        try dx.addScaled(dx1)
        return dx
    }

    func release() { norm1.release(); attn.release(); norm2.release(); mlp.release() }
}

/// The Mix-Transformer encoder: four stages of patch embed, blocks, LayerNorm.
public final class MixTransformer {
    public let config: ModelConfig
    public let patchEmbeds: [OverlapPatchEmbed]
    public let blocks: [[TransformerBlock]]
    public let norms: [LayerNorm]
    private var stageGrids: [(Int, Int)] = []
    private var inputShape: [Int] = []

    init(config: ModelConfig, prefix: String = "encoder") {
        self.config = config
        let total = config.depths.reduce(0, +)
        // Drop-path rates grow linearly over all blocks (0 … rate).
        let rates: [Float] = (0..<total).map { total > 1 ? config.dropPathRate * Float($0) / Float(total - 1) : 0 }
        var embeds: [OverlapPatchEmbed] = [], stages: [[TransformerBlock]] = [], norms: [LayerNorm] = []
        var inCh = 3, cursor = 0
        for i in 0..<4 {
            let k = i == 0 ? 7 : 3
            embeds.append(OverlapPatchEmbed(name: key(prefix, "patch_embed\(i + 1)"), in: inCh, out: config.embedDims[i],
                                            kernel: k, stride: config.strides[i], eps: config.embedLNEps))
            stages.append((0..<config.depths[i]).map { j in
                TransformerBlock(name: key(prefix, "block\(i + 1)", "\(j)"), dim: config.embedDims[i], heads: config.numHeads[i],
                                 sr: config.srRatios[i], mlpRatio: config.mlpRatio, blockEps: config.blockLNEps,
                                 embedEps: config.embedLNEps, dropPath: rates[cursor + j])
            })
            norms.append(LayerNorm(name: key(prefix, "norm\(i + 1)"), features: config.embedDims[i], eps: config.blockLNEps))
            cursor += config.depths[i]
            inCh = config.embedDims[i]
        }
        patchEmbeds = embeds; blocks = stages; self.norms = norms
    }

    /// Parameters in state-dict order.
    public var parameters: [Parameter] {
        (0..<4).flatMap { i in patchEmbeds[i].parameters + blocks[i].flatMap(\.parameters) + norms[i].parameters }
    }

    func setTraining(_ t: Bool) { for s in blocks { for b in s { b.setTraining(t) } } }

    /// Channels-last shape of stage i's output in the last forward.
    func stageShape(_ i: Int) -> [Int] { [inputShape[0], stageGrids[i].0, stageGrids[i].1, config.embedDims[i]] }

    /// Image NCHW (B, 3, H, W) → stage maps channels-last (B, h_i, w_i, C_i) and every block's raw logits.
    func forward(_ image: Tensor, rng: inout RNG) throws -> (stages: [Tensor], attns: [Tensor]) {
        guard image.rank == 4, image.shape[1] == 3 else {
            throw LayerError.badInput(layer: "encoder", shape: image.shape, expected: "(B, 3, H, W)")
        }
        inputShape = image.shape
        var x = try image.permuted([0, 2, 3, 1])
        var stages: [Tensor] = [], attns: [Tensor] = []
        stageGrids = []
        for i in 0..<4 {
            var (tokens, h, w) = try patchEmbeds[i].forward(x)
            for blk in blocks[i] {
                let (t, raw) = try blk.forward(tokens, h: h, w: w, rng: &rng)
                tokens = t
                attns.append(raw)
            }
            tokens = try norms[i].forward(tokens)
            x = try tokens.reshaped([tokens.shape[0], h, w, tokens.shape[2]])
            stages.append(x)
            stageGrids.append((h, w))
        }
        return (stages, attns)
    }

    /// Backward from stage-map gradients (channels-last, nil = zero) and raw-logit gradients per block
    /// (nil = zero). Returns the image gradient (B, 3, H, W).
    func backward(dStages: [Tensor?], dAttns: [Tensor?]) throws -> Tensor {
        precondition(dStages.count == 4 && dAttns.count == config.depths.reduce(0, +))
        var carry: Tensor? = nil     // gradient flowing into stage i's output from stage i+1
        var blockIndex = dAttns.count
        for i in stride(from: 3, through: 0, by: -1) {
            let (h, w) = stageGrids[i]
            let b = inputShape[0], c = config.embedDims[i]
            var d = Tensor(zeros: [b, h * w, c])
            if let ds = dStages[i] { try d.addScaled(try ds.reshaped([b, h * w, c])) }
            if let cr = carry { try d.addScaled(try cr.reshaped([b, h * w, c])) }
            d = try norms[i].backward(d)
            for blk in blocks[i].reversed() {
                blockIndex -= 1
                d = try blk.backward(d, dRaw: dAttns[blockIndex])
            }
            carry = try patchEmbeds[i].backward(d)
        }
        return try carry!.permuted([0, 3, 1, 2])
    }

    func release() {
        for p in patchEmbeds { p.release() }
        for s in blocks { for b in s { b.release() } }
        for n in norms { n.release() }
    }
}
