import Foundation

/// Shape and hyper-parameters of an AFA network (a MiT encoder, the SegFormer head, the classifier
/// and the AFA head). Codable with the reference's snake_case keys, so a golden case's `model` JSON
/// decodes directly.
public struct ModelConfig: Codable, Equatable, Sendable {
    public var preset: String
    public var embedDims: [Int]
    public var numHeads: [Int]
    public var depths: [Int]
    public var srRatios: [Int]
    /// Patch-embed strides; AFA uses 4, 2, 2, 1 (`methodStrides`) so the last stage is 1/16 of the input.
    public var strides: [Int]
    public static let methodStrides = [4, 2, 2, 1]
    public var mlpRatio: Int
    /// LayerNorm eps inside blocks and at the end of each stage.
    public var blockLNEps: Float
    /// LayerNorm eps of the patch embeds and of the spatial-reduction norm.
    public var embedLNEps: Float
    /// SegFormer head width.
    public var embeddingDim: Int
    /// Classes including background; the classifier has numClasses − 1 outputs.
    public var numClasses: Int
    public var dropPathRate: Float
    /// Dropout2d before the head's last conv.
    public var headDropout: Float
    public var bnEps: Float
    public var bnMomentum: Float

    enum CodingKeys: String, CodingKey {
        case preset, strides
        case embedDims = "embed_dims", numHeads = "num_heads", depths, srRatios = "sr_ratios"
        case mlpRatio = "mlp_ratio", blockLNEps = "block_ln_eps", embedLNEps = "embed_ln_eps"
        case embeddingDim = "embedding_dim", numClasses = "num_classes", dropPathRate = "drop_path_rate"
        case headDropout = "head_dropout", bnEps = "bn_eps", bnMomentum = "bn_momentum"
    }

    /// Encoder shapes of the presets: SegFormer's mit_b0…b5 and `tiny` (tests and demos).
    public static let presetShapes: [String: (dims: [Int], heads: [Int], depths: [Int], sr: [Int])] = [
        "mit_b0": ([32, 64, 160, 256], [1, 2, 5, 8], [2, 2, 2, 2], [8, 4, 2, 1]),
        "mit_b1": ([64, 128, 320, 512], [1, 2, 5, 8], [2, 2, 2, 2], [8, 4, 2, 1]),
        "mit_b2": ([64, 128, 320, 512], [1, 2, 5, 8], [3, 4, 6, 3], [8, 4, 2, 1]),
        "mit_b3": ([64, 128, 320, 512], [1, 2, 5, 8], [3, 4, 18, 3], [8, 4, 2, 1]),
        "mit_b4": ([64, 128, 320, 512], [1, 2, 5, 8], [3, 8, 27, 3], [8, 4, 2, 1]),
        "mit_b5": ([64, 128, 320, 512], [1, 2, 5, 8], [3, 6, 40, 3], [8, 4, 2, 1]),
        "tiny": ([16, 32, 40, 64], [1, 2, 5, 8], [2, 2, 2, 2], [8, 4, 2, 1]),
    ]

    public static var presetNames: [String] { presetShapes.keys.sorted() }

    /// The configuration of a preset with the method's defaults (head width 256, 32 for `tiny`;
    /// 21 classes; drop-path 0.1 and head dropout 0.1 as the original trains).
    public static func preset(_ name: String, numClasses: Int = 21, embeddingDim: Int? = nil) throws -> ModelConfig {
        guard let s = presetShapes[name] else {
            throw ConfigError.invalid("unknown preset '\(name)'; expected one of \(presetNames.joined(separator: ", "))")
        }
        return ModelConfig(preset: name, embedDims: s.dims, numHeads: s.heads, depths: s.depths, srRatios: s.sr,
                           strides: methodStrides, mlpRatio: 4, blockLNEps: 1e-6, embedLNEps: 1e-5,
                           embeddingDim: embeddingDim ?? (name == "tiny" ? 32 : 256), numClasses: numClasses,
                           dropPathRate: 0.1, headDropout: 0.1, bnEps: 1e-5, bnMomentum: 0.1)
    }

    /// Checks the internal consistency of the configuration.
    public func validate() throws {
        for (n, a) in [("embed_dims", embedDims), ("num_heads", numHeads), ("depths", depths), ("sr_ratios", srRatios), ("strides", strides)] {
            guard a.count == 4 else { throw ConfigError.invalid("\(n) needs 4 values, got \(a)") }
            guard a.allSatisfy({ $0 > 0 }) else { throw ConfigError.invalid("\(n) must be positive, got \(a)") }
        }
        for i in 0..<4 where embedDims[i] % numHeads[i] != 0 {
            throw ConfigError.invalid("stage \(i + 1): embed dim \(embedDims[i]) not divisible by \(numHeads[i]) heads")
        }
        guard depths[3] >= 2 else { throw ConfigError.invalid("the AFA head needs at least 2 blocks in stage 4") }
        guard numClasses >= 2 else { throw ConfigError.invalid("num_classes must be at least 2 (background + 1)") }
        guard embeddingDim > 0, mlpRatio > 0 else { throw ConfigError.invalid("embedding_dim and mlp_ratio must be positive") }
        guard (0..<1).contains(dropPathRate), (0..<1).contains(headDropout) else {
            throw ConfigError.invalid("dropout rates must be in [0, 1)")
        }
    }

    /// Input channels of the AFA head: the raw attention of the last two blocks.
    public var affinityChannels: Int { 2 * numHeads[3] }

    /// Number of values in the state dict (parameters and BatchNorm statistics), computed from the
    /// configuration alone, with overflow checks: nil when the configuration is invalid or the count
    /// does not fit. Loading a checkpoint compares it with what the file holds before building anything.
    public var stateDictValueCount: Int? {
        guard (try? validate()) != nil else { return nil }
        var total = 0
        func add(_ factors: Int...) -> Bool {
            var p = 1
            for f in factors {
                let (r, o) = p.multipliedReportingOverflow(by: f)
                if o { return false }
                p = r
            }
            let (t, o) = total.addingReportingOverflow(p)
            total = t
            return !o
        }
        var inCh = 3
        for i in 0..<4 {
            let c = embedDims[i], k = i == 0 ? 7 : 3
            let (hidden, overflow) = c.multipliedReportingOverflow(by: mlpRatio)
            if overflow { return nil }
            // patch embed: conv weight + bias, LayerNorm
            guard add(c, inCh, k, k), add(c), add(2, c) else { return nil }
            for _ in 0..<depths[i] {
                guard add(2, c), add(c, c), add(c), add(2, c, c), add(2, c), add(c, c), add(c),   // norm1, q, kv, proj
                      add(hidden, c), add(hidden), add(hidden, 9), add(hidden), add(c, hidden), add(c)  // fc1, dwconv, fc2
                else { return nil }
                if srRatios[i] > 1 { guard add(c, c, srRatios[i], srRatios[i]), add(c), add(2, c) else { return nil } }
                guard add(2, c) else { return nil }   // norm2
            }
            guard add(2, c) else { return nil }       // stage norm
            inCh = c
        }
        let e = embeddingDim
        for i in 0..<4 { guard add(embedDims[i], e), add(e) else { return nil } }   // linear_c1…c4
        guard add(4, e, e), add(4, e), add(1),                                     // fuse conv; BN weight, bias, mean, var; batches tracked
              add(numClasses, e), add(numClasses),                                 // linear_pred
              add(affinityChannels), add(1),                                       // attn_proj
              add(numClasses - 1, embedDims[3])                                    // classifier
        else { return nil }
        return total
    }
}

/// An inconsistent or unknown configuration value.
public enum ConfigError: Error, CustomStringConvertible, LocalizedError {
    case invalid(String)
    public var description: String {
        switch self { case let .invalid(m): return "configuration: \(m)" }
    }
    public var errorDescription: String? { description }
}
