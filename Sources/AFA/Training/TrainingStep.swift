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
    /// Parts of `labels`: PAR and the random walk (the rest is resizing, label rules and bookkeeping).
    public var par = 0.0, randomWalk = 0.0
    public var total: Double { camPasses + labels + forward + backward + optimizer }
}

/// What one iteration did.
public struct StepResult {
    public var losses: LossValues
    public var learningRates: [Double]
    public var timings: StepTimings
}

/// One AFA training iteration (DESIGN.md §5): multi-scale CAMs, refined pseudo labels, random walk,
/// affinity labels, the main forward, the three losses with the phase weights, backward and AdamW.
///
/// The step owns the training workspace: train mode, the random stream of dropout and drop-path
/// (saved in checkpoints), the activations kept between forward and backward (dropped after each
/// backward, the table reused) and the gradient store the optimiser reads.
public final class TrainingStep {
    public let model: AFAModel
    public let optimizer: PolyWarmupAdamW
    public var config: TrainConfig
    public let refinement: LabelRefinement
    public let gradients: Gradients
    public let workspace: Workspace

    public init(model: AFAModel, optimizer: PolyWarmupAdamW, config: TrainConfig, rng: RNG = RNG(seed: 0)) {
        self.model = model; self.optimizer = optimizer; self.config = config
        refinement = LabelRefinement(config: config, strides: model.config.strides)
        gradients = model.makeGradients()
        workspace = .training(gradients: gradients, rng: rng)
    }

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

    /// Runs iteration `nIter`. With `labels` given (teacher forcing) the CAM passes and refinement are
    /// skipped; with `step` false the optimiser is not applied (gradients stay in `gradients`).
    @discardableResult
    public func run(_ batch: TrainingBatch, nIter: Int, labels given: RefinedLabels? = nil, step: Bool = true,
                    recorder: Recorder? = nil) throws -> StepResult {
        var t = StepTimings()
        let (h, w) = (batch.images.shape[2], batch.images.shape[3])
        var clock = Date()
        func lap() -> Double { let now = Date(); defer { clock = now }; return now.timeIntervalSince(clock) }
        let labels: RefinedLabels
        if let given {
            labels = given
        } else {
            let cam = try model.multiScaleCAM(batch.images, scales: config.scales, workspace)
            record(cam, batch: batch, recorder)
            t.camPasses = lap()
            refinement.clock.reset()
            labels = try refinement.labels(images: batch.images, cam: cam, clsLabel: batch.clsLabel, boxes: batch.boxes, recorder: recorder)
            t.labels = lap()
            t.par = refinement.clock.par
            t.randomWalk = refinement.clock.randomWalk
        }
        _ = lap()
        let ws = workspace
        ws.reset()
        defer { ws.reset() }
        let out = try model.forward(batch.images, ws)
        t.forward = lap()
        if let recorder {
            for (i, s) in out.stages.enumerated() { recorder.add("fwd.stage\(i + 1)", try s.permuted([0, 3, 1, 2])) }
            for (i, a) in out.attns.enumerated() { recorder.add("fwd.attn.\(i)", a) }
            recorder.add("fwd.attn_pred", out.attnPred); recorder.add("fwd.cls", out.cls); recorder.add("fwd.seg", out.seg)
        }
        let segTarget = nIter > config.affLabelIter ? labels.refinedAffinityLabel : labels.refinedPseudoLabel
        gradients.zero()
        let losses = try model.lossAndBackward(out, targets: LossTargets(clsLabel: batch.clsLabel, segLabel: segTarget,
                                                                         affLabel: labels.affinityLabel),
                                               nIter: nIter, config: config, inputSize: (h, w), ws)
        ws.reset()
        t.backward = lap()
        var lrs: [Double] = []
        if step {
            lrs = optimizer.step(gradients)
            t.optimizer = lap()
        }
        return StepResult(losses: losses, learningRates: lrs, timings: t)
    }
}
