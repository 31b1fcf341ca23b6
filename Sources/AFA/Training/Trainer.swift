import Foundation
import SafeTensors
import TensorCore

/// One log line of `log.jsonl`.
public struct TrainLogEntry: Codable, Sendable {
    public var iteration: Int
    public var loss: Double
    public var cls: Double
    public var seg: Double
    public var aff: Double
    public var lr: [Double]
    public var imagesPerSecond: Double
    public var elapsedSeconds: Double

    enum CodingKeys: String, CodingKey {
        case iteration = "iter", loss, cls, seg, aff, lr, imagesPerSecond = "images_per_s", elapsedSeconds = "elapsed_s"
    }
}

/// `afa train`: the training loop over a VOC-layout dataset with checkpoints, logs, resume and
/// periodic evaluation. The run directory holds `config.json`, `log.jsonl`, `eval.jsonl` and
/// `checkpoints/iter_<n>.safetensors` + `checkpoints/latest.safetensors`.
public final class Trainer {
    public let recipe: TrainRecipe
    public let dataset: VOCDataset
    public let evalDataset: VOCDataset?
    public let runDirectory: String
    public let model: AFAModel
    public let optimizer: PolyWarmupAdamW
    public let step: TrainingStep
    /// Iterations already done (from a resumed checkpoint).
    public private(set) var completed = 0

    /// Progress callback: (iteration, log entry when one was written).
    public var onProgress: ((Int, TrainLogEntry?) -> Void)?
    /// Called with each evaluation report.
    public var onEvaluation: ((Int, EvaluationReport) -> Void)?

    public init(recipe: TrainRecipe, dataset: VOCDataset, evalDataset: VOCDataset?, runDirectory: String, resume: Bool) throws {
        self.recipe = recipe; self.dataset = dataset; self.evalDataset = evalDataset; self.runDirectory = runDirectory
        guard dataset.numClasses == recipe.model.numClasses else {
            throw AFAError.invalidInput("dataset has \(dataset.numClasses) classes, the recipe \(recipe.model.numClasses)")
        }
        try recipe.model.validate()
        try recipe.train.validate()
        model = try AFAModel(config: recipe.model)
        model.initialize(seed: recipe.seed)
        if let p = recipe.pretrained { try model.loadPretrainedEncoder(try SafeTensorsFile(path: p)) }
        optimizer = PolyWarmupAdamW(model: model, config: recipe.train, globalStep: 0, trainNorms: recipe.trainNorms)
        // Dropout and drop-path draw from their own stream, seeded apart from the initialisation.
        step = TrainingStep(model: model, optimizer: optimizer, config: recipe.train, rng: RNG(seed: recipe.seed &+ 101))
        let fm = FileManager.default
        try fm.createDirectory(atPath: runDirectory + "/checkpoints", withIntermediateDirectories: true)
        let latest = runDirectory + "/checkpoints/latest.safetensors"
        if resume {
            guard fm.fileExists(atPath: latest) else { throw AFAError.invalidInput("--resume: no checkpoint at \(latest)") }
            let ck = try Checkpoint.open(latest)
            guard ck.recipe == recipe else {
                throw AFAError.invalidInput("--resume: \(latest) was written with a different configuration; compare \(runDirectory)/config.json")
            }
            if let rng = try ck.restore(model: model, optimizer: optimizer) { step.workspace.rng = rng }
            completed = ck.iteration
            try trimLog(after: completed)
        } else if fm.fileExists(atPath: latest) {
            throw AFAError.invalidInput("\(runDirectory) already holds a run (\(latest)); pass --resume to continue it or choose another --out")
        }
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try enc.encode(recipe), to: runDirectory + "/config.json")
    }

    /// Drops log lines past the checkpoint a resumed run restarts from.
    func trimLog(after n: Int) throws {
        let path = runDirectory + "/log.jsonl"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        let keep = text.split(separator: "\n").filter { line in
            guard let e = try? JSONDecoder().decode(TrainLogEntry.self, from: Data(line.utf8)) else { return false }
            return e.iteration <= n
        }
        try AtomicFile.write(Data((keep.joined(separator: "\n") + (keep.isEmpty ? "" : "\n")).utf8), to: path)
    }

    func appendLine(_ data: Data, to path: String) throws {
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        guard let h = FileHandle(forWritingAtPath: path) else { throw AFAError.invalidInput("cannot write \(path)") }
        defer { try? h.close() }
        h.seekToEndOfFile()
        h.write(data + Data("\n".utf8))
    }

    public func saveCheckpoint(iteration: Int) throws {
        // never replace a good checkpoint with diverged weights
        for p in model.parameters where !p.value.isFinite {
            throw AFAError.nonFinite("parameter \(p.name) after iteration \(iteration); training stopped, the last checkpoint in \(runDirectory)/checkpoints is intact")
        }
        let data = try Checkpoint.encode(model: model, optimizer: optimizer, rng: step.workspace.rng, recipe: recipe, classNames: dataset.classNames, iteration: iteration)
        try AtomicFile.write(data, to: runDirectory + "/checkpoints/iter_\(iteration).safetensors")
        try AtomicFile.write(data, to: runDirectory + "/checkpoints/latest.safetensors")
    }

    /// Trains up to `recipe.iterations` (or `stopAfter` iterations of this call, for tests).
    public func run(stopAfter: Int? = nil) throws {
        let total = recipe.iterations
        guard completed < total else { return }
        let loader = BatchLoader(dataset: dataset, augmentation: Augmentation(cropSize: recipe.cropSize, scaleRange: recipe.scaleRange),
                                 batchSize: recipe.batchSize, seed: recipe.seed, startIteration: completed + 1)
        defer { loader.stop() }
        let start = Date()
        var windowStart = Date(), windowImages = 0
        let last = min(total, completed + (stopAfter ?? total))
        for n in (completed + 1)...last {
            let batch = try loader.batch(iteration: n)
            let r: StepResult
            do { r = try step.run(batch, nIter: n) } catch AFAError.nonFinite(let m) {
                throw AFAError.nonFinite("\(m); training stopped at iteration \(n), the last checkpoint in \(runDirectory)/checkpoints is intact")
            }
            completed = n
            windowImages += recipe.batchSize
            var entry: TrainLogEntry?
            if n % max(recipe.logEvery, 1) == 0 || n == last {
                let now = Date()
                let e = TrainLogEntry(iteration: n, loss: r.losses.total, cls: r.losses.cls, seg: r.losses.seg, aff: r.losses.aff,
                                      lr: r.learningRates, imagesPerSecond: Double(windowImages) / max(now.timeIntervalSince(windowStart), 1e-9),
                                      elapsedSeconds: now.timeIntervalSince(start))
                let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
                try appendLine(try enc.encode(e), to: runDirectory + "/log.jsonl")
                windowStart = now; windowImages = 0
                entry = e
            }
            if n % max(recipe.checkpointEvery, 1) == 0 || n == total { try saveCheckpoint(iteration: n) }
            onProgress?(n, entry)
            if let ev = evalDataset, recipe.evalEvery > 0, n % recipe.evalEvery == 0 || (n == total && recipe.evalEvery > 0) {
                try evaluate(ev, iteration: n)
            }
        }
        if completed == last && last != total && completed % max(recipe.checkpointEvery, 1) != 0 { try saveCheckpoint(iteration: completed) }
    }

    func evaluate(_ ds: VOCDataset, iteration: Int) throws {
        let seg = Segmenter(model: model, recipe: recipe, classNames: dataset.classNames)
        let report = try Evaluator().evaluate(seg, dataset: ds)
        var obj = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(report)) as! [String: Any]
        obj["iter"] = iteration
        try appendLine(try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), to: runDirectory + "/eval.jsonl")
        onEvaluation?(iteration, report)
    }
}
