import Foundation
import SafeTensors
import TensorCore

/// Re-runs a golden-format case with this implementation and collects every tensor it computes under
/// the golden key names, so that a dump can be compared with the reference key by key.
public enum Replay {
    /// Keys of a case file that are not model weights.
    static let nonWeightPrefixes = ["input.", "fwd.", "cam.", "rw.", "par.", "label.", "loss.", "grad.", "step1.", "opt.", "sched."]

    /// Replays `casePath`. With `teacherForced`, losses and gradients use the case's golden labels as targets.
    public static func run(casePath: String, teacherForced: Bool) throws -> SafeTensorsWriter {
        let gc = try GoldenCase(path: casePath)
        var out = SafeTensorsWriter(metadata: ["format": "afa-golden-v1", "producer": "afa \(AFAInfo.version)",
                                                "teacher_forced": teacherForced ? "true" : "false"])
        try replayIteration(gc, teacherForced: teacherForced, into: &out)
        return out
    }

    /// A full training iteration case.
    static func replayIteration(_ gc: GoldenCase, teacherForced: Bool, into out: inout SafeTensorsWriter) throws {
        let modelConfig = try gc.decode(ModelConfig.self, key: "model")
        let train = try gc.decode(TrainConfig.self, key: "train")
        let nIter = try gc.int("n_iter")
        let model = try AFAModel(config: modelConfig)
        try model.loadStateDict(gc.file, ignorePrefixes: nonWeightPrefixes)
        model.setTraining(true)

        let image = try gc.tensor("input.image")
        let clsLabel = try gc.tensor("input.cls_label")
        let (h, w) = (image.shape[2], image.shape[3])

        let fwd = try model.forward(image)
        for (i, s) in fwd.stages.enumerated() { out.add("fwd.stage\(i + 1)", try s.permuted([0, 3, 1, 2])) }
        for (i, a) in fwd.attns.enumerated() { out.add("fwd.attn.\(i)", a) }
        out.add("fwd.attn_pred", fwd.attnPred)
        out.add("fwd.cls", fwd.cls)
        out.add("fwd.seg", fwd.seg)

        guard teacherForced else { return }
        let segKey = gc.string("seg_target") == "refined_aff_label" ? "label.refined_aff_label" : "label.refined_pseudo_label"
        let targets = LossTargets(clsLabel: clsLabel, segLabel: try gc.int32s(segKey), affLabel: try gc.int32s("label.aff_label"))
        model.zeroGrad()
        let losses = try model.lossAndBackward(fwd, targets: targets, nIter: nIter, config: train, inputSize: (h, w))
        writeLosses(losses, into: &out)
        for p in model.parameters { out.add("grad." + p.name, p.grad) }
    }

    static func writeLosses(_ v: LossValues, into out: inout SafeTensorsWriter) {
        for (k, x) in [("cls", v.cls), ("seg", v.seg), ("seg_bg", v.segBg), ("seg_fg", v.segFg), ("aff", v.aff), ("total", v.total)] {
            out.add("loss." + k, Tensor(shape: [1], repeating: Float(x)))
        }
        out.addInt32("loss.aff_pos_count", shape: [1], [Int32(v.affPosCount)])
        out.addInt32("loss.aff_neg_count", shape: [1], [Int32(v.affNegCount)])
    }
}
