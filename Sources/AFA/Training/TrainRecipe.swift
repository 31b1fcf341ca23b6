import Foundation

/// Everything `afa train` needs, resolved: written to RUN/config.json and into every checkpoint.
public struct TrainRecipe: Codable, Equatable, Sendable {
    public var preset = "mit_b1"
    public var cropSize = 320
    public var batchSize = 2
    public var iterations = 20000
    public var seed: UInt64 = 0
    public var threads = 0
    public var evalEvery = 0
    public var checkpointEvery = 1000
    public var logEvery = 20
    /// LayerNorms of the encoder train too (otherwise frozen, as with ImageNet weights).
    public var trainNorms = false
    public var pretrained: String?
    public var scaleRange: [Double] = [0.5, 2.0]
    /// Data-parallel ranks the global batch is split over (`mpirun -np N afa-mpi train`, or one
    /// process emulating them); nil for one. Part of the recipe: it changes the BatchNorm statistics
    /// and the random streams, so a run resumes only with the same number.
    public var shards: Int?
    public var model: ModelConfig
    public var train: TrainConfig

    enum CodingKeys: String, CodingKey {
        case preset, seed, threads, pretrained, model, train
        case cropSize = "crop_size", batchSize = "batch_size", iterations, evalEvery = "eval_every"
        case checkpointEvery = "checkpoint_every", logEvery = "log_every", trainNorms = "train_norms", scaleRange = "scale_range"
        case shards
    }

    /// The paper's VOC recipe for the real presets; for `tiny` (no pretrained weights exist) a recipe
    /// that learns from scratch: crop 96, batch 4, lr 1e-3 (heads ×10), trainable norms, rescale
    /// 0.7–1.3, affinity labels sampled by majority, patch strides 4, 2, 1, 1 at crops under
    /// `finerGridCropLimit`, no drop-path or head dropout. Phase iterations (warm-up, CAM-only phase,
    /// affinity-label switch) keep their share of the 20000-iteration schedule. `crop` replaces the
    /// preset's crop (the tiny recipe's strides follow it).
    public static func defaults(preset: String, numClasses: Int, iterations: Int?, crop: Int? = nil) throws -> TrainRecipe {
        var model = try ModelConfig.preset(preset, numClasses: numClasses)
        var train = TrainConfig()
        var r = TrainRecipe(model: model, train: train)
        r.preset = preset
        if preset == "tiny" {
            model.dropPathRate = 0
            model.headDropout = 0
            train.lr = 1e-3
            r.cropSize = crop ?? 96
            r.batchSize = 4
            r.trainNorms = true
            r.iterations = 2000
            // With the crop as large as the (small) images, a strong zoom crops objects away while
            // their image-level label stays: a narrower rescale range keeps the labels true.
            r.scaleRange = [0.7, 1.3]
            // Each affinity-label grid point takes its cell's most frequent label (8×8 pixels on the grid
            // below) rather than one pixel's: a small object often holds no grid point (docs/training.md,
            // measured on six datasets).
            train.affLabelSampling = .majority
            // Stages 3 and 4 at 1/8 of the input instead of 1/16: 12 × 12 tokens on a 96-pixel crop
            // rather than 6 × 6, for the CAM, the attention, the affinity labels and the random walk.
            // Same parameters, 2.3× the FLOPs; 6.5 seg points more on the six datasets' average, most
            // on small objects (docs/training.md, "A finer token grid"). Only where the method's grid
            // is coarse: the attention grows with tokens², and at crop 320 the finer grid took 7.5 GB
            // and 25× the time of a step on the method's 20 × 20.
            model.strides = r.cropSize < finerGridCropLimit ? [4, 2, 1, 1] : ModelConfig.methodStrides
        }
        if let crop { r.cropSize = crop }
        if let iterations { r.iterations = iterations }
        r.model = model
        r.train = train
        r.scalePhases(to: r.iterations)
        r.checkpointEvery = max(1, min(1000, r.iterations / 4))
        return r
    }

    /// A recipe from JSON (RUN/config.json, `--config`, a checkpoint's metadata); on failure the error names
    /// the source and the key as the file spells it ("'train.lr' is not a number") instead of the
    /// decoder's internal description.
    public static func decode(json: Data, source: String) throws -> TrainRecipe {
        do {
            return try JSONDecoder().decode(TrainRecipe.self, from: json)
        } catch let error as DecodingError {
            let path = { (p: [CodingKey]) in p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
                .joined(separator: ".").replacingOccurrences(of: ".[", with: "[") }
            let hint = " (`afa train --dry-run` prints a complete recipe)"
            switch error {
            case let .keyNotFound(key, c):
                throw AFAError.invalidInput("\(source): the recipe has no '\(path(c.codingPath + [key]))'" + hint)
            case let .typeMismatch(type, c):
                throw AFAError.invalidInput("\(source): '\(path(c.codingPath))' is not \(describe(type))")
            case let .valueNotFound(type, c):
                throw AFAError.invalidInput("\(source): '\(path(c.codingPath))' is null, expected \(describe(type))")
            case let .dataCorrupted(c) where c.codingPath.isEmpty:
                throw AFAError.invalidInput("\(source): not a JSON recipe (\(c.underlyingError.map { "\($0.localizedDescription)" } ?? c.debugDescription))")
            case let .dataCorrupted(c):
                throw AFAError.invalidInput("\(source): '\(path(c.codingPath))': \(c.debugDescription)")
            @unknown default:
                throw AFAError.invalidInput("\(source): the recipe does not decode: \(error)")
            }
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        case is Int.Type, is UInt64.Type: return "an integer"
        case is Float.Type, is Double.Type: return "a number"
        case is [Any].Type: return "a list"
        default: return "a \(type)"
        }
    }

    /// The tiny recipe trains on the finer token grid (strides 4, 2, 1, 1) below this crop, where the
    /// method's grid has fewer than 12 tokens a side (the finer grid's at crop 96, where it was measured,
    /// as at 128); from it on, on the method's.
    public static let finerGridCropLimit = 192

    /// Phase iterations scaled from the paper's 20000-iteration schedule to `n`.
    public mutating func scalePhases(to n: Int) {
        let f = Double(n) / 20000
        train.maxIters = n
        train.warmupIters = Int((1500 * f).rounded())
        train.camIters = Int((2000 * f).rounded())
        train.affLabelIter = Int((6000 * f).rounded())
    }
}
