import AFA
import ArgumentParser
import Foundation
import Logging

/// `afa train`.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train AFA on a dataset in PASCAL VOC layout from image-level labels.",
        discussion: TrainOptions.discussion)

    @OptionGroup var options: TrainOptions

    func run() throws { try options.train(communicator: nil) }
}

/// The options of `afa train` and `afa-mpi train`, and the training run they describe.
public struct TrainOptions: ParsableArguments {
    public init() {}

    public static let discussion = """
            Defaults reproduce the paper's VOC recipe for the real presets (mit_b1, crop 320, batch 2, 20000 \
            iterations, lr 6e-5, warm-up 1500, classification-only phase 2000, affinity-label switch 6000). \
            No pretrained weights ship with the product, so --preset tiny defaults to a recipe that learns \
            from scratch: crop 96, batch 4, 2000 iterations, lr 1e-3 (heads ×10), trainable norm layers, rescale 0.7-1.3, no \
            drop-path. Phase iterations keep their share of the schedule when --iters changes. \
            RUN/ holds config.json, log.jsonl, eval.jsonl and checkpoints/ (iter_<n> and latest).
            """

    @Option(help: "Dataset root (VOC layout).") var data: String
    @Option(help: "Run directory (created).") var out: String
    @Option(help: "Model preset: \(ModelConfig.presetNames.joined(separator: ", ")).") var preset = "mit_b1"
    @Option(help: "Crop size.") var crop: Int?
    @Option(help: "Images per batch.") var batch: Int?
    @Option(help: "Training iterations.") var iters: Int?
    @Option(help: "Backbone learning rate (classifier, AFA head and decoder use 10×).") var lr: Double?
    @Option(help: "Random seed (data order, augmentation, init, dropout).") var seed: UInt64 = 0
    @Option(help: "Random rescale range of the augmentation, 'lo,hi' (paper: 0.5,2.0).") var rescale: String?
    @Option(help: "Evaluate on the val split every N iterations (0 = only at the end when a val split exists).") var evalEvery: Int?
    @Option(help: "Write a checkpoint every N iterations.") var checkpointEvery: Int?
    @Option(help: "ImageNet MiT weights (safetensors) for the encoder.") var pretrained: String?
    @Flag(help: "Continue the run in --out from its newest valid checkpoint (checkpoints/latest.safetensors, or the newest readable iter_<n> when latest is damaged).") var resume = false
    @Option(help: "A JSON recipe (as written to RUN/config.json); command-line options override it.") var config: String?
    @Flag(help: "Check the dataset and resolve the recipe, print it as JSON (the form --config takes) and stop; nothing is written.") var dryRun = false
    @Option(help: "Training split name.") var split = "train"
    @Option(help: "A split list file instead of ImageSets/Segmentation/<split>.txt.") var splitFile: String?
    @Option(help: "Write a log.jsonl line every N iterations (default 20).") var logEvery: Int?
    @Option(help: ArgumentHelp("Split every global batch over N data-parallel shards in this one process, each with its own BatchNorm statistics, as `mpirun -np N afa-mpi train` does over N ranks (and with the same results).",
                               valueName: "N")) var shards: Int?
    @OptionGroup var threads: ThreadOptions

    public func validate() throws {
        if let shards, shards < 1 { throw ValidationError("--shards must be at least 1, got \(shards)") }
        if let logEvery, logEvery < 1 { throw ValidationError("--log-every must be at least 1, got \(logEvery)") }
        if let rescale { _ = try Self.rescaleRange(rescale) }
    }

    static func rescaleRange(_ text: String) throws -> [Double] {
        let v = try parseScales(text)
        guard v.count == 2, v[0] <= v[1] else { throw ValidationError("--rescale: expected 'lo,hi', got '\(text)'") }
        return v
    }

    /// Trains; with a communicator this process is one rank of a data-parallel run (only rank 0 prints).
    /// `defaultThreads` applies when --threads is not given (a rank's share of the machine's cores).
    public func train(communicator: Communicator?, defaultThreads: Int? = nil) throws {
        try threads.apply(default: defaultThreads)
        let ds = try VOCDataset(root: data, split: split, splitFile: splitFile, requireMasks: false)
        var recipe: TrainRecipe
        // a recipe from a file keeps its settings unless an option overrides them
        var fromFile = true
        if let config {
            recipe = try JSONDecoder().decode(TrainRecipe.self, from: try Data(contentsOf: URL(fileURLWithPath: config)))
        } else if resume, let saved = try? Data(contentsOf: URL(fileURLWithPath: out + "/config.json")) {
            recipe = try JSONDecoder().decode(TrainRecipe.self, from: saved)
        } else {
            fromFile = false
            recipe = try TrainRecipe.defaults(preset: preset, numClasses: ds.numClasses, iterations: iters)
        }
        if let crop { recipe.cropSize = crop }
        if let batch { recipe.batchSize = batch }
        if let iters, iters != recipe.iterations { recipe.iterations = iters; recipe.scalePhases(to: iters) }
        if let lr { recipe.train.lr = lr }
        if let rescale { recipe.scaleRange = try Self.rescaleRange(rescale) }
        if let logEvery { recipe.logEvery = logEvery }
        if let communicator {
            guard shards == nil || shards == communicator.size else {
                throw ValidationError("--shards \(shards!) does not match the \(communicator.size) ranks of this run (leave it out under mpirun)")
            }
            recipe.shards = communicator.size > 1 ? communicator.size : nil
        } else if let shards {
            recipe.shards = shards > 1 ? shards : nil
        }
        if recipe.batchSize % (recipe.shards ?? 1) != 0 {
            throw ValidationError("--batch \(recipe.batchSize) is the global batch and must divide by the \(recipe.shards ?? 1) ranks/shards")
        }
        if !resume || config != nil { recipe.seed = seed }
        if let checkpointEvery { recipe.checkpointEvery = checkpointEvery }
        if let pretrained { recipe.pretrained = pretrained }
        recipe.threads = Runtime.threads
        let valPath = splitFile == nil ? data + "/ImageSets/Segmentation/val.txt" : nil
        let evalDS = try valPath.flatMap { FileManager.default.fileExists(atPath: $0) ? try VOCDataset(root: data, split: "val", requireMasks: true) : nil }
        if let evalEvery {
            recipe.evalEvery = evalEvery
        } else if !fromFile {
            recipe.evalEvery = evalDS != nil ? recipe.iterations : 0
        }
        guard recipe.cropSize >= 32, recipe.batchSize >= 1, recipe.iterations >= 1 else {
            throw ValidationError("--crop must be at least 32, --batch and --iters at least 1")
        }
        if dryRun {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try recipe.model.validate()
            try recipe.train.validate()
            print(String(decoding: try enc.encode(recipe), as: UTF8.self))
            return
        }
        let trainer = try Trainer(recipe: recipe, dataset: ds, evalDataset: evalDS, runDirectory: out, resume: resume, communicator: communicator)
        guard trainer.parallel.isWriter else { return try trainer.run() }
        if let notice = trainer.resumeNotice { Logger(label: "afa.train").warning("\(notice)") }
        let log = Progress(total: recipe.iterations, start: trainer.completed)
        let ranks = communicator.map { ", \($0.size) ranks × \(Runtime.threads) threads (global batch \(recipe.batchSize))" }
            ?? ((recipe.shards ?? 1) > 1 ? ", \(recipe.shards!) shards in one process, \(Runtime.threads) threads" : ", \(Runtime.threads) threads")
        print("afa train: \(recipe.preset), \(ds.count) images, \(ds.numClasses) classes, crop \(recipe.cropSize), batch \(recipe.batchSize), "
              + "\(recipe.iterations) iterations (cls-only ≤ \(recipe.train.camIters), aff label > \(recipe.train.affLabelIter)), lr \(recipe.train.lr)"
              + ranks + ", OpenBLAS \(BLASKernel.coreName)" + (trainer.completed > 0 ? "; resuming after iteration \(trainer.completed)" : ""))
        trainer.onProgress = { n, e in log.update(n, e) }
        trainer.onEvaluation = { n, r in log.finishLine(); print("evaluation at iteration \(n):\n" + r.table) }
        try trainer.run()
        log.finishLine()
        if communicator != nil {
            print(String(format: "weights identical on all ranks (checksum %016llx)", DataParallel.checksum(trainer.model.parameters)))
        }
        print("done: \(out)/checkpoints/latest.safetensors")
    }
}

/// A progress bar with ETA on a terminal, plain log lines otherwise.
final class Progress {
    let total: Int
    let tty = isatty(STDOUT_FILENO) != 0
    let start = Date()
    let first: Int
    var lastEntry: TrainLogEntry?
    var drawn = false

    init(total: Int, start: Int) { self.total = total; first = start }

    func update(_ n: Int, _ e: TrainLogEntry?) {
        if let e { lastEntry = e }
        let done = n - first
        let elapsed = Date().timeIntervalSince(start)
        let eta = done > 0 ? elapsed / Double(done) * Double(total - n) : 0
        if tty {
            let width = 30, filled = Int(Double(width) * Double(n) / Double(total))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            let loss = lastEntry.map { String(format: "loss %.4f", $0.loss) } ?? ""
            print(String(format: "\r[%@] %d/%d %@ ETA %@   ", bar, n, total, loss, Self.clock(eta)), terminator: "")
            fflush(stdout)
            drawn = true
        } else if let e {
            print(String(format: "iter %d/%d loss %.4f (cls %.4f seg %.4f aff %.4f) lr %.2e %.1f img/s ETA %@", n, total, e.loss, e.cls, e.seg, e.aff,
                         e.lr.first ?? 0, e.imagesPerSecond, Self.clock(eta)))
            fflush(stdout)   // log lines appear as they happen when stdout is a file or pipe
        }
    }

    func finishLine() { if drawn { print(""); drawn = false } }

    static func clock(_ s: Double) -> String {
        let t = Int(s.rounded())
        return String(format: "%d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60)
    }
}
