import Foundation
import TensorCore

/// One batch of training data.
public struct TrainingBatch {
    /// Normalised images (B, 3, H, W).
    public var images: Tensor
    /// Multi-hot image labels (B, numClasses − 1).
    public var clsLabel: Tensor
    /// Each image's valid region (the rest is padding).
    public var boxes: [ImageBox]

    public init(images: Tensor, clsLabel: Tensor, boxes: [ImageBox]) {
        self.images = images; self.clsLabel = clsLabel; self.boxes = boxes
    }
}

/// Wall time of the parts of one iteration, seconds.
public struct StepTimings: Sendable {
    public var camPasses = 0.0, labels = 0.0, forward = 0.0, backward = 0.0, optimizer = 0.0
    /// Averaging gradients and losses over the ranks of a data-parallel run.
    public var allreduce = 0.0
    /// Parts of `labels`: PAR and the random walk (the rest is resizing, label rules and bookkeeping).
    public var par = 0.0, randomWalk = 0.0
    public var total: Double { camPasses + labels + forward + backward + optimizer + allreduce }
}

/// What one iteration did.
public struct StepResult {
    public var losses: LossValues
    public var learningRates: [Double]
    public var timings: StepTimings
    /// How this step's targets divide the global batch (summed over shards and ranks).
    public var labels: LabelCounts
}

/// One AFA training iteration (DESIGN.md §5): multi-scale CAMs, refined pseudo labels, random walk,
/// affinity labels, the main forward, the three losses with the phase weights, backward and AdamW.
///
/// The step owns the training workspace: train mode, the random stream of dropout and drop-path
/// (saved in checkpoints), the activations kept between forward and backward (dropped after each
/// backward, the table reused) and the gradient store the optimiser reads. With data-parallel shards
/// (`DataParallel`) each shard runs the whole iteration on its part of the batch with its own stream
/// and BatchNorm statistics, and the optimiser sees the shards' mean gradient.
public final class TrainingStep {
    public let model: AFAModel
    public let optimizer: PolyWarmupAdamW
    public var config: TrainConfig
    public let refinement: LabelRefinement
    public let gradients: Gradients
    public let workspace: Workspace
    public let parallel: DataParallel
    /// The dropout / drop-path stream of each local shard (the workspace's own when there is one).
    public var streams: [RNG] {
        get { shardStreams ?? [workspace.rng] }
        set {
            precondition(newValue.count == parallel.localShards.count, "one random stream per local shard")
            if shardStreams == nil { workspace.rng = newValue[0] } else { shardStreams = newValue }
        }
    }
    private var shardStreams: [RNG]?
    /// A second store for the shards after the first one when one process computes several.
    private let shardGradients: Gradients?
    private let statistics: ShardStatistics?

    public init(model: AFAModel, optimizer: PolyWarmupAdamW, config: TrainConfig, rng: RNG = RNG(seed: 0),
                parallel: DataParallel = .single, streams: [RNG]? = nil) {
        self.model = model; self.optimizer = optimizer; self.config = config; self.parallel = parallel
        refinement = LabelRefinement(config: config, strides: model.config.strides)
        gradients = model.makeGradients()
        workspace = .training(gradients: gradients, rng: rng)
        let local = parallel.localShards.count
        if local > 1 { shardStreams = streams ?? (0..<local).map { _ in rng } }
        shardGradients = local > 1 ? model.makeGradients() : nil
        statistics = local > 1 ? ShardStatistics(model: model, shards: local) : nil
        if let streams { self.streams = streams }
    }

    /// Averages the BatchNorm running statistics over the shards (all ranks call it together), as the
    /// ranks' buffers are averaged before a checkpoint or an evaluation; every shard continues from
    /// the mean, so a resumed run sees what an uninterrupted one does.
    public func averageStatistics() throws {
        if let statistics { statistics.average(); return }
        guard let comm = parallel.communicator, parallel.shards > 1 else { return }
        let buffers = model.buffers
        var flat = buffers.flatMap { Array(UnsafeBufferPointer(start: $0.value.data, count: $0.value.count)) }
        try flat.withUnsafeMutableBufferPointer { try comm.allreduceSum($0.baseAddress!, count: $0.count) }
        var o = 0
        for b in buffers {
            for i in 0..<b.value.count { b.value.data[i] = flat[o + i] / Float(parallel.shards) }
            o += b.value.count
        }
    }

    /// Makes the model's statistics every local shard's (after a checkpoint is loaded).
    public func statisticsLoaded() { statistics?.reset() }

    /// Labels this implementation derives for `batch` (CAM passes, PAR, random walk).
    public func labels(for batch: TrainingBatch, recorder: Recorder? = nil) throws -> RefinedLabels {
        let cam = try model.multiScaleCAM(batch.images, scales: config.scales, workspace)
        record(cam, batch: batch, recorder)
        return try refinement.labels(images: batch.images, cam: cam, clsLabel: batch.clsLabel, boxes: batch.boxes, recorder: recorder)
    }

    func record(_ cam: MultiScaleCAM, batch: TrainingBatch, _ recorder: Recorder?) {
        guard let recorder else { return }
        for (s, raw) in cam.raw.enumerated() { recorder.add("cam.raw.\(s)", raw) }
        recorder.add("cam.aff_mat", cam.affinity)
        let (b, k, h, w) = (cam.cams.shape[0], cam.cams.shape[1], cam.cams.shape[2], cam.cams.shape[3])
        for i in 0..<b {
            let present = (0..<k).filter { batch.clsLabel.data[i * k + $0] != 0 }
            let t = Tensor(zeros: [present.count, h, w])
            for (r, c) in present.enumerated() { (t.data + r * h * w).update(from: cam.cams.data + (i * k + c) * h * w, count: h * w) }
            recorder.add("cam.cams.\(i)", t)
        }
    }

    /// Runs iteration `nIter` on this process's part of the global batch: `batch` is the global batch
    /// when the process computes every shard, its rank's shard otherwise. With `labels` given (teacher
    /// forcing, one local shard) the CAM passes and refinement are skipped; with `step` false the
    /// optimiser is not applied (the mean gradient stays in `gradients`).
    @discardableResult
    public func run(_ batch: TrainingBatch, nIter: Int, labels given: RefinedLabels? = nil, step: Bool = true,
                    recorder: Recorder? = nil) throws -> StepResult {
        var t = StepTimings()
        let local = parallel.localShards
        if local.count > 1 && (given != nil || recorder != nil) {
            throw AFAError.invalidInput("teacher forcing and recording run one shard per process")
        }
        let n = local.count > 1 ? try parallel.shardSize(batchSize: batch.images.shape[0]) : batch.images.shape[0]
        gradients.zero()
        var losses = LossValues()
        var labelCounts = LabelCounts()
        for (i, s) in local.enumerated() {
            let part = local.count > 1 ? batch.shard(s, size: n) : batch
            let store = i == 0 ? gradients : shardGradients!
            if i > 0 { store.zero() }
            statistics?.load(i)
            if let ss = shardStreams { workspace.rng = ss[i] }
            let l = try shardStep(part, nIter: nIter, labels: given, into: store, timings: &t, labelCounts: &labelCounts, recorder: recorder)
            shardStreams?[i] = workspace.rng
            statistics?.store(i)
            if i > 0 { gradients.add(store) }
            losses.cls += l.cls; losses.seg += l.seg; losses.segBg += l.segBg; losses.segFg += l.segFg
            losses.aff += l.aff; losses.total += l.total
            losses.affPosCount += l.affPosCount; losses.affNegCount += l.affNegCount
        }
        if let comm = parallel.communicator {
            let clock = Date()
            try comm.allreduceSum(gradients.flat.data, count: gradients.flat.count)
            var v = [losses.cls, losses.seg, losses.segBg, losses.segFg, losses.aff, losses.total,
                     Double(losses.affPosCount), Double(losses.affNegCount)] + labelCounts.counts.map(Double.init)
            try v.withUnsafeMutableBufferPointer { try comm.allreduceSum($0.baseAddress!, count: $0.count) }
            (losses.cls, losses.seg, losses.segBg, losses.segFg, losses.aff, losses.total) = (v[0], v[1], v[2], v[3], v[4], v[5])
            (losses.affPosCount, losses.affNegCount) = (Int(v[6]), Int(v[7]))
            labelCounts = LabelCounts(counts: v[8...].map { Int($0) })
            t.allreduce = Date().timeIntervalSince(clock)
        }
        if parallel.shards > 1 {
            // the mean over shards; losses as each shard's mean, counts as totals
            gradients.scale(by: 1 / Float(parallel.shards))
            let f = Double(parallel.shards)
            losses.cls /= f; losses.seg /= f; losses.segBg /= f; losses.segFg /= f; losses.aff /= f; losses.total /= f
        }
        var lrs: [Double] = []
        if step {
            let clock = Date()
            lrs = optimizer.step(gradients)
            t.optimizer = Date().timeIntervalSince(clock)
        }
        return StepResult(losses: losses, learningRates: lrs, timings: t, labels: labelCounts)
    }

    /// The whole iteration for one shard, its gradient added into `store`.
    private func shardStep(_ batch: TrainingBatch, nIter: Int, labels given: RefinedLabels?, into store: Gradients,
                           timings t: inout StepTimings, labelCounts: inout LabelCounts, recorder: Recorder?) throws -> LossValues {
        let (h, w) = (batch.images.shape[2], batch.images.shape[3])
        var clock = Date()
        func lap() -> Double { let now = Date(); defer { clock = now }; return now.timeIntervalSince(clock) }
        let labels: RefinedLabels
        if let given {
            labels = given
        } else {
            let cam = try model.multiScaleCAM(batch.images, scales: config.scales, workspace)
            record(cam, batch: batch, recorder)
            t.camPasses += lap()
            refinement.clock.reset()
            labels = try refinement.labels(images: batch.images, cam: cam, clsLabel: batch.clsLabel, boxes: batch.boxes, recorder: recorder)
            t.labels += lap()
            t.par += refinement.clock.par
            t.randomWalk += refinement.clock.randomWalk
        }
        labelCounts = labelCounts + LabelCounts(labels, ignore: Int32(config.ignoreIndex))
        _ = lap()
        let ws = workspace
        ws.reset()
        defer { ws.reset() }
        ws.gradients = store
        defer { ws.gradients = gradients }
        let out = try model.forward(batch.images, ws, allAttentions: recorder != nil)
        t.forward += lap()
        if let recorder {
            for (i, s) in out.stages.enumerated() { recorder.add("fwd.stage\(i + 1)", try s.permuted([0, 3, 1, 2])) }
            for (i, a) in out.attns.enumerated() { recorder.add("fwd.attn.\(i)", a) }
            recorder.add("fwd.attn_pred", out.attnPred); recorder.add("fwd.cls", out.cls); recorder.add("fwd.seg", out.seg)
        }
        let segTarget = nIter > config.affLabelIter ? labels.refinedAffinityLabel : labels.refinedPseudoLabel
        let losses = try model.lossAndBackward(out, targets: LossTargets(clsLabel: batch.clsLabel, segLabel: segTarget,
                                                                         affLabel: labels.affinityLabel),
                                               nIter: nIter, config: config, inputSize: (h, w), ws)
        ws.reset()
        t.backward += lap()
        return losses
    }
}
