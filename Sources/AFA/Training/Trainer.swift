import Foundation
import Logging
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
    /// How the targets of the iterations since the previous line divided the pixels and pairs.
    public var labels: LabelShares?

    enum CodingKeys: String, CodingKey {
        case iteration = "iter", loss, cls, seg, aff, lr, imagesPerSecond = "images_per_s", elapsedSeconds = "elapsed_s", labels
    }
}

/// `afa train`: the training loop over a VOC-layout dataset with checkpoints, logs, resume and
/// periodic evaluation. The run directory holds `config.json`, `log.jsonl`, `eval.jsonl`,
/// `checkpoints/iter_<n>.safetensors` + `checkpoints/latest.safetensors`, TensorBoard event files in
/// `tb/` and the evaluations' picture grids in `pictures/`.
public final class Trainer {
    public let recipe: TrainRecipe
    public let dataset: VOCDataset
    public let evalDataset: VOCDataset?
    public let runDirectory: String
    public let model: AFAModel
    public let optimizer: PolyWarmupAdamW
    public let step: TrainingStep
    /// How the global batch is split over ranks (one shard for a plain run).
    public let parallel: DataParallel
    /// Weights are compared across ranks every this many iterations (and at every checkpoint).
    public static let checksumEvery = 50
    /// TensorBoard event file in `RUN/tb/` (rank 0 only): the log's scalars, the evaluations and their pictures.
    public private(set) var tensorBoard: TensorBoardWriter?
    /// Where the trainer says what it did (resumes, checkpoints, evaluations) through swift-log.
    let logger = Logger(label: "afa.train")
    /// Validation images shown in the pictures at each evaluation.
    public static let pictureImages = 4
    /// Iterations already done (from a resumed checkpoint).
    public private(set) var completed = 0
    /// The checkpoint a resumed run continued from.
    public private(set) var resumedFrom: String?
    /// Set when `--resume` could not use `latest.safetensors` and says which file it used instead.
    public private(set) var resumeNotice: String?

    /// Progress callback: (iteration, log entry when one was written).
    public var onProgress: ((Int, TrainLogEntry?) -> Void)?
    /// Called with each evaluation report.
    public var onEvaluation: ((Int, EvaluationReport) -> Void)?

    /// With a communicator this process is one rank of a data-parallel run (`recipe.shards` ranks):
    /// it trains on its shard of every global batch, and only rank 0 touches `runDirectory`
    /// (it reads the checkpoint a resume continues from and hands it to the other ranks).
    public init(recipe: TrainRecipe, dataset: VOCDataset, evalDataset: VOCDataset?, runDirectory: String, resume: Bool,
                communicator: Communicator? = nil) throws {
        self.recipe = recipe; self.dataset = dataset; self.evalDataset = evalDataset; self.runDirectory = runDirectory
        guard dataset.numClasses == recipe.model.numClasses else {
            throw AFAError.invalidInput("dataset has \(dataset.numClasses) classes, the recipe \(recipe.model.numClasses)")
        }
        try recipe.model.validate()
        try recipe.train.validate()
        parallel = try DataParallel(shards: recipe.shards ?? 1, communicator: communicator)
        _ = try parallel.shardSize(batchSize: recipe.batchSize)
        model = try AFAModel(config: recipe.model)
        model.initialize(seed: recipe.seed)
        if let p = recipe.pretrained { try model.loadPretrainedEncoder(try SafeTensorsFile(path: p)) }
        optimizer = PolyWarmupAdamW(model: model, config: recipe.train, globalStep: 0, trainNorms: recipe.trainNorms)
        // Dropout and drop-path draw from their own stream per shard, seeded apart from the initialisation.
        step = TrainingStep(model: model, optimizer: optimizer, config: recipe.train, rng: DataParallel.stream(seed: recipe.seed, shard: 0),
                            parallel: parallel, streams: parallel.localShards.map { DataParallel.stream(seed: recipe.seed, shard: $0) })
        var checkpoint: Checkpoint?
        if let comm = communicator {
            // Every rank must train the same recipe (else their weights part at the first step).
            let json = try JSONEncoder.sorted.encode(recipe)
            let all = try comm.allgather([json.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }])
            let off = all.indices.filter { all[$0] != all[0] }
            guard off.isEmpty else {
                throw DivergedRanksError(description: "rank(s) \(off.map(String.init).joined(separator: ", ")) resolved a different recipe than rank 0; "
                                         + "start every rank with the same options and data")
            }
        }
        if parallel.isWriter { checkpoint = try prepareRunDirectory(resume: resume) }
        if let comm = communicator {
            // Rank 0's checkpoint (or none) on every rank.
            let bytes = try comm.broadcast(checkpoint.map { $0.file.contents } ?? Data())
            checkpoint = bytes.isEmpty ? nil : try Checkpoint.open(data: bytes, name: "the checkpoint rank 0 resumed from")
        }
        if let ck = checkpoint {
            guard ck.recipe == recipe else {
                throw AFAError.invalidInput("--resume: \(resumedFrom ?? "the checkpoint") was written with a different configuration; compare \(runDirectory)/config.json")
            }
            if let streams = try ck.restore(model: model, optimizer: optimizer) {
                step.streams = parallel.localShards.map { streams[$0] }
            }
            step.statisticsLoaded()
            completed = ck.iteration
        }
        if parallel.isWriter {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try AtomicFile.write(try enc.encode(recipe), to: runDirectory + "/config.json")
            tensorBoard = try TensorBoardWriter(directory: runDirectory + "/tb", resumeStep: completed > 0 ? completed + 1 : nil)
            if let notice = resumeNotice { logger.warning("\(notice)") }
            if let from = resumedFrom { logger.debug("resumed", metadata: ["checkpoint": "\(from)", "iteration": "\(completed)"]) }
        }
    }

    /// Checks and tidies the run directory (rank 0 only) and returns the checkpoint a resume continues from.
    private func prepareRunDirectory(resume: Bool) throws -> Checkpoint? {
        let fm = FileManager.default
        try fm.createDirectory(atPath: runDirectory + "/checkpoints", withIntermediateDirectories: true)
        let latest = runDirectory + "/checkpoints/latest.safetensors"
        let started = fm.fileExists(atPath: latest) || !Self.numberedCheckpoints(in: runDirectory + "/checkpoints").isEmpty
        var checkpoint: Checkpoint?
        if resume && !started && fm.fileExists(atPath: runDirectory + "/config.json") {
            // Stopped before its first checkpoint: nothing to continue, so start over.
            resumeNotice = "no checkpoint in \(runDirectory)/checkpoints yet; starting from iteration 0"
            try trimLogs(after: 0)
        } else if resume {
            let (ck, path, notice) = try Self.newestValidCheckpoint(in: runDirectory + "/checkpoints")
            guard ck.recipe == recipe else {
                throw AFAError.invalidInput("--resume: \(path) was written with a different configuration; compare \(runDirectory)/config.json")
            }
            checkpoint = ck
            resumedFrom = path
            resumeNotice = notice
            if notice != nil { try AtomicFile.link(path, to: latest) }
            try trimLogs(after: ck.iteration)
        } else if started {
            throw AFAError.invalidInput("\(runDirectory) already holds a run (\(latest)); pass --resume to continue it or choose another --out")
        } else {
            // Lines of an earlier attempt that stopped before its first checkpoint.
            try trimLogs(after: 0)
        }
        Self.removeTemporaryFiles(in: runDirectory + "/checkpoints")
        return checkpoint
    }

    /// The checkpoint `--resume` continues from: `latest.safetensors`, unless an `iter_<n>` file is newer
    /// (a run killed between writing the two) or `latest` is missing, truncated or damaged; then the
    /// newest `iter_<n>` that opens and passes its checksum, with a notice that says so.
    public static func newestValidCheckpoint(in dir: String) throws -> (Checkpoint, String, notice: String?) {
        let latest = dir + "/latest.safetensors"
        var latestProblem: String?
        var best: (Checkpoint, String)?
        if FileManager.default.fileExists(atPath: latest) {
            do { best = (try Checkpoint.open(latest), latest) } catch {
                latestProblem = String(describing: error).split(separator: "\n").first.map(String.init) ?? "unreadable"
            }
        } else {
            latestProblem = "missing"
        }
        var rejected: [String] = []
        for (n, path) in numberedCheckpoints(in: dir) where n > (best?.0.iteration ?? -1) {
            do {
                best = (try Checkpoint.open(path), path)
                break
            } catch {
                rejected.append((path as NSString).lastPathComponent)
            }
        }
        guard let (ck, path) = best else {
            throw AFAError.invalidInput("--resume: no readable checkpoint in \(dir)" + (latestProblem.map { " (latest.safetensors: \($0))" } ?? "")
                                        + (rejected.isEmpty ? "" : "; damaged: \(rejected.joined(separator: ", "))"))
        }
        guard path != latest else { return (ck, path, nil) }
        var notice = "resuming from \((path as NSString).lastPathComponent) (iteration \(ck.iteration)), the newest valid checkpoint: "
        notice += latestProblem.map { "latest.safetensors is \($0 == "missing" ? "missing" : "unusable: " + $0)" }
            ?? "latest.safetensors holds an older iteration"
        if !rejected.isEmpty { notice += "; skipped damaged \(rejected.joined(separator: ", "))" }
        return (ck, path, notice)
    }

    /// `iter_<n>.safetensors` files in `dir`, newest first.
    static func numberedCheckpoints(in dir: String) -> [(Int, String)] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return files.compactMap { f -> (Int, String)? in
            guard f.hasPrefix("iter_"), f.hasSuffix(".safetensors"),
                  let n = Int(f.dropFirst(5).dropLast(12)), n >= 0 else { return nil }
            return (n, dir + "/" + f)
        }.sorted { $0.0 > $1.0 }
    }

    /// Temporary files left by a write that a kill interrupted (see `AtomicFile`).
    static func removeTemporaryFiles(in dir: String) {
        for f in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where f.hasPrefix(".") && f.contains(".tmp-") {
            try? FileManager.default.removeItem(atPath: dir + "/" + f)
        }
    }

    /// Trims `log.jsonl` and `eval.jsonl` to the iterations up to `n`.
    func trimLogs(after n: Int) throws {
        for name in ["log.jsonl", "eval.jsonl"] { try trimLog(runDirectory + "/" + name, after: n) }
    }

    /// Drops lines past the checkpoint a resumed run restarts from (and a line a kill cut short).
    func trimLog(_ path: String, after n: Int) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        let keep = text.split(separator: "\n").filter { line in
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let it = obj["iter"] as? Int else { return false }
            return it <= n
        }
        try AtomicFile.write(Data((keep.joined(separator: "\n") + (keep.isEmpty ? "" : "\n")).utf8), to: path)
    }

    /// Appends one line (logs are append-only; a line a kill cuts short is dropped by `trimLog` on resume).
    func appendLine(_ data: Data, to path: String) throws {
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        guard let h = FileHandle(forWritingAtPath: path) else { throw FileWriteError(path: path, reason: "cannot open for writing") }
        defer { try? h.close() }
        do {
            try h.seekToEnd()
            try h.write(contentsOf: data + Data("\n".utf8))   // throws (a full disk) instead of trapping
        } catch {
            throw FileWriteError(path: path, reason: (error as NSError).localizedDescription)
        }
    }

    /// Writes a checkpoint (every rank calls it: the ranks average their BatchNorm statistics, compare
    /// weights and gather their random streams; rank 0 writes).
    public func saveCheckpoint(iteration: Int) throws {
        try step.averageStatistics()
        _ = try parallel.verifyIdenticalWeights(model.parameters, iteration: iteration)
        var streams = step.streams
        if let comm = parallel.communicator {
            let words = try comm.allgather(streams.flatMap(\.stateWords))
            streams = (0..<comm.size).map { RNG(stateWords: Array(words[($0 * 4)..<($0 * 4 + 4)])) }
        }
        guard parallel.isWriter else { return }
        // never replace a good checkpoint with diverged weights
        for p in model.parameters where !p.value.isFinite {
            throw AFAError.nonFinite("parameter \(p.name) after iteration \(iteration); training stopped, the last checkpoint in \(runDirectory)/checkpoints is intact")
        }
        let data = try Checkpoint.encode(model: model, optimizer: optimizer, streams: streams, recipe: recipe, classNames: dataset.classNames, iteration: iteration)
        // iter_<n> first, durably; `latest` is then a second name for the same file, so a kill or a full
        // disk between the two leaves every checkpoint on disk whole (resume picks the newest).
        let numbered = runDirectory + "/checkpoints/iter_\(iteration).safetensors"
        do {
            try AtomicFile.write(data, to: numbered)
            try AtomicFile.link(numbered, to: runDirectory + "/checkpoints/latest.safetensors")
            logger.debug("checkpoint written", metadata: ["file": "\(numbered)", "bytes": "\(data.count)"])
        } catch let e as FileWriteError {
            throw FileWriteError(path: e.path, reason: e.reason + "; training stopped after iteration \(iteration), the previous checkpoints in \(runDirectory)/checkpoints are intact")
        }
    }

    /// Trains up to `recipe.iterations` (or `stopAfter` iterations of this call, for tests).
    public func run(stopAfter: Int? = nil) throws {
        let total = recipe.iterations
        guard completed < total else { return }
        // A rank loads only its shard of each global batch; a single process loads all of it.
        let shard = parallel.communicator.map { (index: $0.rank, count: $0.size) } ?? (index: 0, count: 1)
        let loader = BatchLoader(dataset: dataset, augmentation: Augmentation(cropSize: recipe.cropSize, scaleRange: recipe.scaleRange),
                                 batchSize: recipe.batchSize, seed: recipe.seed, startIteration: completed + 1, shard: shard)
        defer { loader.stop() }
        let start = Date()
        var windowStart = Date(), windowImages = 0, windowLabels = LabelCounts()
        let last = min(total, completed + (stopAfter ?? total))
        for n in (completed + 1)...last {
            let batch = try loader.batch(iteration: n)
            let r: StepResult
            // n counts iterations from 1 (logs, checkpoints); the method's phase rules (CAM-only up to
            // cam_iters, affinity-label target after aff_label_iter) read the 0-based iteration index
            do { r = try step.run(batch, nIter: n - 1) } catch AFAError.nonFinite(let m) {
                throw AFAError.nonFinite("\(m); training stopped at iteration \(n), the last checkpoint in \(runDirectory)/checkpoints is intact")
            }
            completed = n
            windowImages += recipe.batchSize
            windowLabels = windowLabels + r.labels
            var entry: TrainLogEntry?
            if n % Self.checksumEvery == 0 { _ = try parallel.verifyIdenticalWeights(model.parameters, iteration: n) }
            let logBoundary = n % max(recipe.logEvery, 1) == 0 || n == last
            let now = Date()
            if parallel.isWriter && logBoundary {
                let e = TrainLogEntry(iteration: n, loss: r.losses.total, cls: r.losses.cls, seg: r.losses.seg, aff: r.losses.aff,
                                      lr: r.learningRates, imagesPerSecond: Double(windowImages) / max(now.timeIntervalSince(windowStart), 1e-9),
                                      elapsedSeconds: now.timeIntervalSince(start), labels: windowLabels.shares)
                let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
                try appendLine(try enc.encode(e), to: runDirectory + "/log.jsonl")
                try tensorBoard?.scalars([("loss/total", e.loss), ("loss/cls", e.cls), ("loss/seg", e.seg), ("loss/aff", e.aff),
                                          ("throughput/images_per_s", e.imagesPerSecond)]
                                         + zip(optimizer.groups, e.lr).map { ("lr/" + $0.name, $1) }
                                         + windowLabels.shares.scalars, step: n)
                entry = e
            }
            // every rank starts a new window (only the writer reports it)
            if logBoundary { windowStart = now; windowImages = 0; windowLabels = LabelCounts() }
            if n % max(recipe.checkpointEvery, 1) == 0 || n == total { try saveCheckpoint(iteration: n) }
            onProgress?(n, entry)
            if recipe.evalEvery > 0, n % recipe.evalEvery == 0 || n == total {
                try step.averageStatistics()
                if parallel.isWriter, let ev = evalDataset { try evaluate(ev, iteration: n) }
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
        if let tb = tensorBoard {
            try tb.scalars([("eval/cam_miou", report.camMIoU), ("eval/aff_miou", report.affMIoU), ("eval/seg_miou", report.segMIoU),
                            ("eval/cls_f1", report.clsF1), ("eval/pixel_accuracy", report.pixelAccuracy)], step: iteration)
            let grid = try RunPictures.grid(model: model, recipe: recipe, classNames: dataset.classNames, dataset: ds,
                                            indices: Array(0..<min(Self.pictureImages, ds.count)))
            let png = try ImageCodec.encodePNG(grid)
            try tb.image("pictures", png: png, width: grid.width, height: grid.height, step: iteration)
            try tb.flush()
            // the same grid for `afa report`
            try FileManager.default.createDirectory(atPath: runDirectory + "/pictures", withIntermediateDirectories: true)
            try AtomicFile.write(png, to: runDirectory + "/pictures/eval_\(iteration).png")
        }
        onEvaluation?(iteration, report)
    }
}

extension JSONEncoder {
    /// Keys sorted, so equal values encode to equal bytes.
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}
