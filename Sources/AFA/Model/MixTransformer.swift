import Layers
import TensorCore

/// Overlapping patch embedding: a strided convolution (k7 s4 p3 for stage 1, k3 s{stride} p1 after),
/// then LayerNorm over channels. Channels-last map in, tokens (B, h·w, C) out.
public final class OverlapPatchEmbed: Module {
    public let proj: Conv2d
    public let norm: LayerNorm

    init(name: String, in inCh: Int, out outCh: Int, kernel: Int, stride: Int, eps: Float) {
        proj = Conv2d(name: key(name, "proj"), in: inCh, out: outCh, kernel: kernel, stride: stride, padding: kernel / 2)
        norm = LayerNorm(name: key(name, "norm"), features: outCh, eps: eps)
    }

    /// Returns tokens and the grid size.
    func forward(_ x: Tensor, _ ws: Workspace) throws -> (Tensor, Int, Int) {
        let y = try proj.forward(x, ws)
        ws.save(y.shape, for: self)
        let tokens = try norm.forward(try y.reshaped([y.shape[0], y.shape[1] * y.shape[2], y.shape[3]]), ws)
        return (tokens, y.shape[1], y.shape[2])
    }

    func backward(_ dTokens: Tensor, _ ws: Workspace) throws -> Tensor {
        let outShape = try ws.take([Int].self, for: self, name: "patch embed")
        let dy = try norm.backward(dTokens, ws)
        return try proj.backward(try dy.reshaped(outShape), ws)
    }
}

/// Mix-FFN: Linear(C→rC), depthwise 3×3 conv on the token grid, exact GELU, Linear(rC→C).
///
/// Between forward and backward it keeps one of its three rC-wide maps, fc1's output (the conv's input,
/// kept by the conv). The conv's output (the GELU's input) and fc2's input (the GELU's output) are
/// computed again in backward, in one fused pass, in exchange for two of the block's largest
/// activations (rC wide, 4× its tokens with the MiT ratio).
public final class MixFFN: Module {
    public let fc1: Linear, dwconv: DepthwiseConv3x3, fc2: Linear

    init(name: String, dim: Int, hidden: Int) {
        fc1 = Linear(name: key(name, "fc1"), in: dim, out: hidden)
        dwconv = DepthwiseConv3x3(name: key(name, "dwconv.dwconv"), channels: hidden)
        fc2 = Linear(name: key(name, "fc2"), in: hidden, out: dim)
    }

    func forward(_ x: Tensor, h: Int, w: Int, _ ws: Workspace) throws -> Tensor {
        let b = x.shape[0], tokens = [b, h * w, fc1.outFeatures]
        let a = try fc1.forward(x, ws)
        let g = try dwconv.forwardThenGELU(try a.reshaped([b, h, w, fc1.outFeatures]), ws)
        return try fc2.forward(try g.reshaped(tokens), ws, keepingInput: false)
    }

    /// `grid`: (batch, h, w) of the forward being differentiated.
    func backward(_ dy: Tensor, grid: (b: Int, h: Int, w: Int), _ ws: Workspace) throws -> Tensor {
        let (b, h, w) = grid
        let tokens = [b, h * w, fc1.outFeatures]
        let (pre, activated) = try dwconv.recomputeThenGELU(ws)
        let c = try pre.reshaped(tokens), g = try activated.reshaped(tokens)
        try fc2.accumulateGradients(dy, input: g, ws)
        let dc = fc2.inputGradient(dy, into: g)                        // g is spent: dg takes its place
        Kernels.geluBackward(c.data, dc.data, dc.data, c.count)      // in place: dg becomes dc
        let da = try dwconv.backward(try dc.reshaped([b, h, w, fc1.outFeatures]), ws)
        return try fc1.backward(try da.reshaped([b, h * w, fc1.outFeatures]), ws)
    }
}

/// Transformer block: x = x + DropPath(Attn(LN(x))); x = x + DropPath(FFN(LN(x))).
///
/// Each residual sum is formed by the LayerNorm that reads it next, in the pass that normalises it
/// (`LayerNorm.forwardKeepingSum(_:plus:_:)`, `forward(_:plus:_:)`): the block takes its input as a
/// stream plus the previous block's last branch, still to be added, and hands its own last branch on
/// the same way — the next block's norm1 or the stage's norm adds it. In backward each norm adds its input gradient into the
/// gradient that came down the residual path, in place.
public final class TransformerBlock: Module {
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

    /// The block on `x + pending` (pending: the previous block's last branch, nil for a stage's first
    /// block). Returns the output the same way, as a stream and a branch whose sum it is, and, when
    /// `keepRaw`, the raw attention logits.
    func forward(_ x: Tensor, plus pending: Tensor?, h: Int, w: Int, _ ws: Workspace,
                 keepRaw: Bool) throws -> (stream: Tensor, branch: Tensor, raw: Tensor?) {
        let x0: Tensor, n1: Tensor
        if let pending {
            (x0, n1) = try norm1.forwardKeepingSum(x, plus: pending, ws)
        } else {
            (x0, n1) = (x, try norm1.forward(x, ws))
        }
        let (a, raw) = try attn.forward(n1, h: h, w: w, ws, keepRaw: keepRaw)
        let (x1, n2) = try norm2.forwardKeepingSum(x0, plus: dropPath1.forward(a, ws), ws)
        let f = try mlp.forward(n2, h: h, w: w, ws)
        return (x1, dropPath2.forward(f, ws), raw)
    }

    /// dy: the gradient of the block's output (its stream + branch), overwritten: it becomes the input's.
    func backward(_ dy: Tensor, dRaw: Tensor?, grid: (b: Int, h: Int, w: Int), _ ws: Workspace) throws -> Tensor {
        try norm2.backward(try mlp.backward(try dropPath2.backward(dy, ws), grid: grid, ws), accumulatingInto: dy, ws)
        try norm1.backward(try attn.backward(try dropPath1.backward(dy, ws), dRaw: dRaw, ws), accumulatingInto: dy, ws)
        return dy
    }
}

/// The Mix-Transformer encoder: four stages of patch embed, blocks, LayerNorm.
///
/// Stage i's patch embed, blocks and norm are kept per stage so that reflection finds the parameters
/// in state-dict order (`patch_embed1`, `block1.*`, `norm1`, `patch_embed2`, …).
public final class MixTransformer: Module {
    public final class Stage: Module {
        public let patchEmbed: OverlapPatchEmbed
        public let blocks: [TransformerBlock]
        public let norm: LayerNorm
        init(patchEmbed: OverlapPatchEmbed, blocks: [TransformerBlock], norm: LayerNorm) {
            self.patchEmbed = patchEmbed; self.blocks = blocks; self.norm = norm
        }
    }
    public let config: ModelConfig
    public let stages: [Stage]
    public var patchEmbeds: [OverlapPatchEmbed] { stages.map(\.patchEmbed) }
    public var blocks: [[TransformerBlock]] { stages.map(\.blocks) }
    public var norms: [LayerNorm] { stages.map(\.norm) }

    /// What backward needs: the input shape and the grid of every stage.
    private struct Saved { var inputShape: [Int]; var grids: [(Int, Int)] }

    init(config: ModelConfig, prefix: String = "encoder") {
        self.config = config
        let total = config.depths.reduce(0, +)
        // Drop-path rates grow linearly over all blocks (0 … rate).
        let rates: [Float] = (0..<total).map { total > 1 ? config.dropPathRate * Float($0) / Float(total - 1) : 0 }
        var stages: [Stage] = []
        var inCh = 3, cursor = 0
        for i in 0..<4 {
            let k = i == 0 ? 7 : 3
            let embed = OverlapPatchEmbed(name: key(prefix, "patch_embed\(i + 1)"), in: inCh, out: config.embedDims[i],
                                          kernel: k, stride: config.strides[i], eps: config.embedLNEps)
            let blocks = (0..<config.depths[i]).map { j in
                TransformerBlock(name: key(prefix, "block\(i + 1)", "\(j)"), dim: config.embedDims[i], heads: config.numHeads[i],
                                 sr: config.srRatios[i], mlpRatio: config.mlpRatio, blockEps: config.blockLNEps,
                                 embedEps: config.embedLNEps, dropPath: rates[cursor + j])
            }
            let norm = LayerNorm(name: key(prefix, "norm\(i + 1)"), features: config.embedDims[i], eps: config.blockLNEps)
            stages.append(Stage(patchEmbed: embed, blocks: blocks, norm: norm))
            cursor += config.depths[i]
            inCh = config.embedDims[i]
        }
        self.stages = stages
    }

    /// Image NCHW (B, 3, H, W) → stage maps channels-last (B, h_i, w_i, C_i) and the raw logits of the
    /// blocks from index `rawFrom` on (counted over all stages; the blocks before it skip pooling theirs).
    func forward(_ image: Tensor, _ ws: Workspace, rawFrom: Int = 0) throws -> (stages: [Tensor], attns: [Tensor]) {
        guard image.rank == 4, image.shape[1] == 3 else {
            throw LayerError.badInput(layer: "encoder", shape: image.shape, expected: "(B, 3, H, W)")
        }
        var x = try image.permuted([0, 2, 3, 1])
        var outs: [Tensor] = [], attns: [Tensor] = []
        var grids: [(Int, Int)] = []
        var blockIndex = 0
        for stage in stages {
            var (tokens, h, w) = try stage.patchEmbed.forward(x, ws)
            var pending: Tensor? = nil     // the last block's branch, added by the next norm
            for blk in stage.blocks {
                let (stream, branch, raw) = try blk.forward(tokens, plus: pending, h: h, w: w, ws,
                                                            keepRaw: blockIndex >= rawFrom)
                (tokens, pending) = (stream, branch)
                if let raw { attns.append(raw) }
                blockIndex += 1
            }
            tokens = try pending.map { try stage.norm.forward(tokens, plus: $0, ws) } ?? stage.norm.forward(tokens, ws)
            x = try tokens.reshaped([tokens.shape[0], h, w, tokens.shape[2]])
            outs.append(x)
            grids.append((h, w))
        }
        ws.save(Saved(inputShape: image.shape, grids: grids), for: self)
        return (outs, attns)
    }

    /// Backward from stage-map gradients (channels-last, nil = zero) and raw-logit gradients per block
    /// (nil = zero). Returns the image gradient (B, 3, H, W).
    func backward(dStages: [Tensor?], dAttns: [Tensor?], _ ws: Workspace) throws -> Tensor {
        precondition(dStages.count == 4 && dAttns.count == config.depths.reduce(0, +))
        let saved = try ws.take(Saved.self, for: self, name: "encoder")
        var carry: Tensor? = nil     // gradient flowing into stage i's output from stage i+1
        var blockIndex = dAttns.count
        for i in stride(from: 3, through: 0, by: -1) {
            let (h, w) = saved.grids[i]
            let b = saved.inputShape[0], c = config.embedDims[i]
            var d = Tensor(zeros: [b, h * w, c])
            if let ds = dStages[i] { try d.addScaled(try ds.reshaped([b, h * w, c])) }
            if let cr = carry { try d.addScaled(try cr.reshaped([b, h * w, c])) }
            d = try stages[i].norm.backward(d, ws)
            for blk in stages[i].blocks.reversed() {
                blockIndex -= 1
                d = try blk.backward(d, dRaw: dAttns[blockIndex], grid: (b, h, w), ws)
            }
            carry = try stages[i].patchEmbed.backward(d, ws)
        }
        return try carry!.permuted([0, 3, 1, 2])
    }
}
