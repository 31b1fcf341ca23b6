import AFA
import ArgumentParser
import Foundation

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
            from scratch: crop 96, batch 4, 2000 iterations, lr 1e-3 (heads ×10), trainable norm layers, rescale \
            0.7-1.3, patch strides 4,2,1,1 below crop 192 (a token grid of 1/8 instead of the method's 1/16), \
            affinity labels sampled by each grid cell's most frequent label, no drop-path. Phase \
            iterations keep their share of the schedule when --iters changes. \
            RUN/ holds config.json, log.jsonl, eval.jsonl, checkpoints/ (iter_<n> and latest), TensorBoard files in \
            tb/ and the evaluations' pictures in pictures/ (afa report RUN makes an HTML page of it all).
            """

    @Option(help: "Dataset root (VOC layout).") var data: String
    @Option(help: "Run directory (created).") var out: String
    @Option(help: "Model preset.") var preset = PresetName("mit_b1")
    @Option(help: "Crop size.") var crop: Int?
    @Option(help: "Images per batch (under mpirun the global batch, split over the ranks).") var batch: Int?
    @Option(help: "Training iterations.") var iters: Int?
    @Option(help: "Backbone learning rate (classifier, AFA head and decoder use 10×).") var lr: Double?
    @Option(help: "Random seed (data order, augmentation, init, dropout).") var seed: UInt64 = 0
    @Option(help: "Random rescale range of the augmentation, 'lo,hi' (paper: 0.5,2.0).") var rescale: ValueRange?
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
    @OptionGroup var output: OutputOptions

    public func validate() throws {
        if let shards, shards < 1 { throw ValidationError("--shards must be at least 1, got \(shards)") }
        if let logEvery, logEvery < 1 { throw ValidationError("--log-every must be at least 1, got \(logEvery)") }
        if let batch, batch < 1 { throw ValidationError("--batch must be at least 1, got \(batch)") }
        if let iters, iters < 1 { throw ValidationError("--iters must be at least 1, got \(iters)") }
        if let crop, crop < 32 { throw ValidationError("--crop must be at least 32, got \(crop)") }
        if let batch, let shards, batch % shards != 0 { throw ValidationError("--batch \(batch) must divide by --shards \(shards)") }
    }

    /// Trains; with a communicator this process is one rank of a data-parallel run (only rank 0 prints).
    /// `defaultThreads` applies when --threads is not given (a rank's share of the machine's cores).
    public func train(communicator: Communicator?, defaultThreads: Int? = nil) throws {
        output.apply()
        try threads.apply(default: defaultThreads)
        let ds = try VOCDataset(root: data, split: split, splitFile: splitFile, requireMasks: false)
        var recipe: TrainRecipe
        // a recipe from a file keeps its settings unless an option overrides them
        var fromFile = true
        if let config {
            recipe = try TrainRecipe.decode(json: try Data(contentsOf: URL(fileURLWithPath: config)), source: config)
        } else if resume, let saved = try? Data(contentsOf: URL(fileURLWithPath: out + "/config.json")) {
            recipe = try TrainRecipe.decode(json: saved, source: out + "/config.json")
        } else {
            fromFile = false
            recipe = try TrainRecipe.defaults(preset: preset.name, numClasses: ds.numClasses, iterations: iters, crop: crop)
        }
        if let crop { recipe.cropSize = crop }
        if let batch { recipe.batchSize = batch }
        if let iters, iters != recipe.iterations { recipe.iterations = iters; recipe.scalePhases(to: iters) }
        if let lr { recipe.train.lr = lr }
        if let rescale { recipe.scaleRange = [rescale.lower, rescale.upper] }
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
        let threads = "\(Runtime.threads) thread" + (Runtime.threads == 1 ? "" : "s")
        let ranks = communicator.map { ", \($0.size) ranks × \(threads) (global batch \(recipe.batchSize))" }
            ?? ((recipe.shards ?? 1) > 1 ? ", \(recipe.shards!) shards in one process, \(threads)" : ", \(threads)")
        let summary = "\(recipe.preset), \(ds.count) images, \(ds.numClasses) classes, crop \(recipe.cropSize), batch \(recipe.batchSize), "
            + "\(recipe.iterations) iterations (cls-only ≤ \(recipe.train.camIters), aff label > \(recipe.train.affLabelIter)), lr \(recipe.train.lr)"
            + ranks + ", OpenBLAS \(BLASKernel.coreName)" + (trainer.completed > 0 ? "; resuming after iteration \(trainer.completed)" : "")
        if Console.json {
            Console.emit(["event": "start", "run": out, "recipe": summary, "from_iteration": trainer.completed, "iterations": recipe.iterations])
        } else if !Console.quiet {
            print("afa train: " + summary)
        }
        let progress = ProgressLine("iter", total: recipe.iterations, start: trainer.completed)
        var last: TrainLogEntry?
        trainer.onProgress = { n, e in
            if let e { last = e }
            guard let l = last else { return progress.update(n, fields: [], line: false) }
            var fields = [("loss", l.loss, "loss %.4f")]
            if !progress.live { fields += [("cls", l.cls, "(cls %.4f"), ("seg", l.seg, "seg %.4f"), ("aff", l.aff, "aff %.4f)"), ("lr", l.lr.first ?? 0, "lr %.2e")] }
            fields.append(("images_per_s", l.imagesPerSecond, "%.1f img/s"))
            progress.update(n, fields: fields, line: e != nil)
        }
        trainer.onEvaluation = { n, r in
            progress.finishLine()
            if Console.json {
                var obj = Console.object(r)
                obj["event"] = "evaluation"; obj["iter"] = n
                Console.emit(obj)
            } else if !Console.quiet {
                print("evaluation at iteration \(n):\n" + r.table)
            }
        }
        try trainer.run()
        progress.finishLine()
        let checksum = communicator.map { _ in String(format: "%016llx", DataParallel.checksum(trainer.model.parameters)) }
        if Console.json {
            var obj: [String: Any] = ["event": "done", "checkpoint": "\(out)/checkpoints/latest.safetensors", "iter": trainer.completed]
            if let checksum { obj["weights_checksum"] = checksum }
            Console.emit(obj)
        } else {
            if let checksum { print("weights identical on all ranks (checksum \(checksum))") }
            print("done: \(out)/checkpoints/latest.safetensors")
        }
    }
}
