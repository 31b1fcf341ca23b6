import AFA
import AFACommandLine
import AFADistributed
import ArgumentParser
import Foundation
import SafeTensors

/// `afa-mpi`: the commands that run as the ranks of an Open MPI job (`mpirun -np N afa-mpi ...`).
struct AFAMPICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "afa-mpi",
        abstract: "AFA training over several processes and machines with Open MPI (run it under mpirun).",
        discussion: """
            Every rank trains on its shard of each global batch and the gradients are averaged with \
            MPI_Allreduce; rank 0 writes the run directory. Example: \
            mpirun -np 2 afa-mpi train --data DATA --out RUN --preset tiny --threads 1
            """,
        version: AFAInfo.version,
        subcommands: [Train.self, StepGradients.self, AllreduceBench.self])
}

extension AFAMPICommand {
    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Train AFA data-parallel: the options of `afa train`; --batch is the global batch and divides by the ranks.",
            discussion: TrainOptions.discussion)

        @OptionGroup var options: TrainOptions

        func run() throws {
            try asRank { try options.train(communicator: $0, defaultThreads: $0.threadsPerRank) }
        }
    }

    /// One step's averaged gradient, for checking a cluster against one process.
    struct StepGradients: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "step-gradients",
            abstract: "Compute the averaged gradient of one training step from a fresh model and write it (rank 0).",
            discussion: """
                Run it under `mpirun -np N`, then once without mpirun with --shards N (every shard in one \
                process): the two files hold the same gradients, to rounding, when the ranks compute \
                alike. Tensors are named grad.<parameter>; metadata holds the losses.
                """)

        @Option(help: "Dataset root (VOC layout).") var data: String
        @Option(help: "Where rank 0 writes the gradients (safetensors).") var output: String
        @Option(help: "Model preset.") var preset = "tiny"
        @Option(help: "Crop size (default: the preset's recipe).") var crop: Int?
        @Option(help: "Global batch (default: the preset's recipe).") var batch: Int?
        @Option(help: "Random seed.") var seed: UInt64 = 0
        @Option(help: "The iteration whose batch and loss weights are used (1-based).") var iteration = 1
        @Option(help: "Shards in this one process (without mpirun).") var shards: Int?
        @OptionGroup var threads: ThreadOptions

        func validate() throws {
            if iteration < 1 { throw ValidationError("--iteration must be at least 1") }
            if let shards, shards < 1 { throw ValidationError("--shards must be at least 1") }
        }

        func run() throws {
            try asRank { comm in
                try threads.apply(default: comm.threadsPerRank)
                let ds = try VOCDataset(root: data, split: "train", requireMasks: false)
                var recipe = try TrainRecipe.defaults(preset: preset, numClasses: ds.numClasses, iterations: nil, crop: crop)
                if let batch { recipe.batchSize = batch }
                recipe.seed = seed
                if comm.size > 1, let shards, shards != comm.size { throw ValidationError("--shards \(shards) under \(comm.size) ranks") }
                let parallel = try DataParallel(shards: comm.size > 1 ? comm.size : (shards ?? 1), communicator: comm.size > 1 ? comm : nil)
                let model = try AFAModel(config: recipe.model)
                model.initialize(seed: recipe.seed)
                let optimizer = PolyWarmupAdamW(model: model, config: recipe.train, globalStep: 0, trainNorms: recipe.trainNorms)
                let step = TrainingStep(model: model, optimizer: optimizer, config: recipe.train,
                                        rng: DataParallel.stream(seed: seed, shard: 0), parallel: parallel,
                                        streams: parallel.localShards.map { DataParallel.stream(seed: seed, shard: $0) })
                _ = try parallel.shardSize(batchSize: recipe.batchSize)
                let loader = BatchLoader(dataset: ds, augmentation: Augmentation(cropSize: recipe.cropSize, scaleRange: recipe.scaleRange),
                                         batchSize: recipe.batchSize, seed: seed, startIteration: iteration,
                                         shard: comm.size > 1 ? (comm.rank, comm.size) : (0, 1))
                let r = try step.run(try loader.batch(iteration: iteration), nIter: iteration - 1, step: false)  // as Trainer: 0-based for the phase rules
                loader.stop()
                guard parallel.isWriter else { return }
                var w = SafeTensorsWriter(metadata: [
                    "loss": String(r.losses.total), "cls": String(r.losses.cls), "seg": String(r.losses.seg), "aff": String(r.losses.aff),
                    "shards": String(parallel.shards), "ranks": String(comm.size),
                ])
                for p in model.parameters { w.add("grad." + p.name, step.gradients[p]) }
                try w.write(to: output)
                print(String(format: "step-gradients: iteration %d, %d shard(s) over %d rank(s), loss %.6f → %@", iteration, parallel.shards, comm.size,
                             r.losses.total, output))
            }
        }
    }
}

extension AFAMPICommand {
    /// The gradient allreduce alone, at a model's size: what a data-parallel step adds per iteration.
    struct AllreduceBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench-allreduce",
            abstract: "Time MPI_Allreduce (sum, in place) of one flat float buffer, as a training step does with its gradients.",
            discussion: "Prints one line per size (rank 0): median ms, and the bus bandwidth 2(N−1)/N · bytes / time a ring allreduce moves.")

        @Option(help: "Buffer sizes in millions of floats, comma-separated (mit_b1's gradients: 13.7; tiny's: 0.32).")
        var millions = "13.7,0.32"
        @Option(help: "Timed repetitions per size (after 3 warm-up calls).") var runs = 20
        @Flag(help: "Print JSON lines.") var json = false

        func validate() throws {
            if runs < 1 { throw ValidationError("--runs must be at least 1") }
            let sizes = millions.split(separator: ",").map { Double($0) }
            if sizes.isEmpty || sizes.contains(where: { ($0 ?? 0) <= 0 }) { throw ValidationError("--millions: positive numbers separated by commas") }
        }

        func run() throws {
            try asRank { comm in
                for m in millions.split(separator: ",").compactMap({ Double($0) }) {
                    let count = Int(m * 1e6)
                    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
                    defer { buffer.deallocate() }
                    buffer.initialize(repeating: 1e-3, count: count)
                    var times: [Double] = []
                    for i in 0..<(runs + 3) {
                        let t0 = DispatchTime.now().uptimeNanoseconds
                        try comm.allreduceSum(buffer, count: count)
                        let t = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
                        if i >= 3 { times.append(t) }
                    }
                    let median = times.sorted()[times.count / 2]
                    let bytes = Double(count * 4)
                    let busGBs = comm.size > 1 ? 2 * Double(comm.size - 1) / Double(comm.size) * bytes / (median / 1e3) / 1e9 : 0
                    if comm.rank == 0 {
                        if json {
                            print("{\"ranks\": \(comm.size), \"floats\": \(count), \"megabytes\": \(String(format: "%.1f", bytes / 1e6)), \"median_ms\": \(String(format: "%.3f", median)), \"bus_gb_per_s\": \(String(format: "%.2f", busGBs))}")
                        } else {
                            print(String(format: "allreduce %d ranks, %.2f M floats (%.1f MB): median %.2f ms, bus bandwidth %.2f GB/s", comm.size, m, bytes / 1e6, median, busGBs))
                        }
                    }
                }
            }
        }
    }
}

/// Runs `body` as this process's rank: an error on any rank is printed with the rank's number and
/// ends the whole job (MPI_Abort), so no other rank waits forever in a collective.
func asRank(_ body: (MPICommunicator) throws -> Void) throws {
    let comm = try MPICommunicator()
    do {
        try body(comm)
    } catch {
        let text = String(describing: error)
        FileHandle.standardError.write(Data("afa-mpi: rank \(comm.rank) of \(comm.size): error: \(text)\n".utf8))
        comm.abort(code: 1)
    }
    comm.finalize()
}

// As `afa` does: pick OpenBLAS's fast kernel (re-executing) before any BLAS work and before MPI starts.
BLASKernel.reexecWithFastKernelIfNeeded()
Console.bootstrapLogging()
AFAMPICommand.main()
