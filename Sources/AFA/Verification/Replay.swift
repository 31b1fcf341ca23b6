import Foundation
import ImageIO
import Layers
import SafeTensors
import TensorCore

/// Re-runs a golden-format case with this implementation and collects every tensor it computes under
/// the golden key names, so that a dump can be compared with the reference key by key.
public enum Replay {
    /// Keys of a case file that are not model weights.
    static let nonWeightPrefixes = ["input.", "fwd.", "cam.", "rw.", "par.", "label.", "loss.", "grad.", "step1.", "opt.", "sched."]

    /// Replays `casePath`: a full training iteration, or the unit its metadata names (PAR, random-walk
    /// propagation, PolyWarmupAdamW). With `teacherForced`, losses and gradients use the case's golden
    /// labels as targets and the optimiser steps with the golden gradients.
    public static func run(casePath: String, teacherForced: Bool) throws -> SafeTensorsWriter {
        let gc = try GoldenCase(path: casePath)
        var out = SafeTensorsWriter(metadata: ["format": "afa-golden-v1", "producer": "afa \(AFAInfo.version)",
                                                "teacher_forced": teacherForced ? "true" : "false"])
        switch gc.unit {
        case nil: try replayIteration(gc, teacherForced: teacherForced, into: &out)
        case "PAR": try replayPAR(gc, into: &out)
        case "random-walk propagation": try replayRandomWalk(gc, into: &out)
        case "PolyWarmupAdamW": try replayAdamW(gc, into: &out)
        case "CRF": try replayCRF(gc, into: &out)
        case let u?: throw AFAError.invalidInput("\(gc.path): unknown unit '\(u)' (expected PAR, random-walk propagation, PolyWarmupAdamW or CRF)")
        }
        return out
    }

    /// Copies input tensors of the case into the dump unchanged, so that a dump is complete (a
    /// `--require-all` comparison sees them); only inputs are echoed, never expected outputs.
    static func echo(_ keys: [String], from gc: GoldenCase, into out: inout SafeTensorsWriter) throws {
        for k in keys where gc.file.contains(k) {
            let e = try gc.file.entry(k)
            switch e.dtype {
            case .i32: out.addInt32(k, shape: e.shape, try gc.int32s(k))
            case .i64: out.addInt64(k, shape: e.shape, try gc.file.integers(k).map { Int64($0) })
            case .u8: out.addUInt8(k, shape: e.shape, try gc.file.integers(k).map { UInt8($0) })
            default: out.add(k, try gc.tensor(k))
            }
        }
    }

    static func add(_ r: Recorder, into out: inout SafeTensorsWriter) {
        for (k, t) in r.floats { out.add(k, t) }
        for (k, v) in r.ints { out.addInt32(k, shape: v.shape, v.values) }
    }

    /// A full training iteration case.
    static func replayIteration(_ gc: GoldenCase, teacherForced: Bool, into out: inout SafeTensorsWriter) throws {
        let modelConfig = try gc.decode(ModelConfig.self, key: "model")
        let train = try gc.decode(TrainConfig.self, key: "train")
        let nIter = try gc.int("n_iter")
        let model = try AFAModel(config: modelConfig)
        try model.loadStateDict(gc.file, ignorePrefixes: nonWeightPrefixes)
        try echo(model.stateDictShapes.map(\.0) + ["input.image", "input.cls_label", "input.img_box", "label.fragile"], from: gc, into: &out)
        let images = try gc.tensor("input.image")
        let b = images.shape[0]
        let boxValues = try gc.int32s("input.img_box")
        guard boxValues.count == 4 * b else {
            throw AFAError.invalidInput("\(gc.path): input.img_box holds \(boxValues.count) values, expected \(4 * b) (B × 4)")
        }
        let boxes = (0..<b).map { i in
            ImageBox(h0: Int(boxValues[4 * i]), h1: Int(boxValues[4 * i + 1]), w0: Int(boxValues[4 * i + 2]), w1: Int(boxValues[4 * i + 3]))
        }
        let batch = TrainingBatch(images: images, clsLabel: try gc.tensor("input.cls_label"), boxes: boxes)
        let optimizer = PolyWarmupAdamW(model: model, config: train, globalStep: nIter)
        let step = TrainingStep(model: model, optimizer: optimizer, config: train)
        let recorder = Recorder()

        // The product's own labels are always computed (cam.*, rw.*, par.*, label.*).
        let own = try step.labels(for: batch, recorder: recorder)
        var labels = own
        if teacherForced {
            labels = RefinedLabels(refinedPseudoLabel: try gc.int32s("label.refined_pseudo_label"),
                                   refinedAffinityLabel: try gc.int32s("label.refined_aff_label"),
                                   affinityLabel: try gc.int32s("label.aff_label"))
        }
        let result = try step.run(batch, nIter: nIter, labels: labels, step: false, recorder: recorder)
        add(recorder, into: &out)
        writeLosses(result.losses, into: &out)
        for p in model.parameters { out.add("grad." + p.name, step.gradients[p]) }
        if teacherForced {
            for p in model.parameters { try step.gradients[p].assign(from: try gc.tensor("grad." + p.name)) }
        }
        let lrs = optimizer.step(step.gradients)
        out.add("opt.lr", try Tensor(shape: [lrs.count], values: lrs.map { Float($0) }))
        var state = SafeTensorsWriter()
        model.saveStateDict(into: &state)
        let dict = try SafeTensorsFile(data: try state.encoded(), path: "state after step")
        for name in dict.names {
            if dict.entries[name]!.dtype == .i64 {
                out.addInt64("step1." + name, shape: dict.entries[name]!.shape, try dict.integers(name).map { Int64($0) })
            } else {
                out.add("step1." + name, try dict.tensor(name))
            }
        }
    }

    static func writeLosses(_ v: LossValues, into out: inout SafeTensorsWriter) {
        for (k, x) in [("cls", v.cls), ("seg", v.seg), ("seg_bg", v.segBg), ("seg_fg", v.segFg), ("aff", v.aff), ("total", v.total)] {
            out.add("loss." + k, Tensor(shape: [1], repeating: Float(x)))
        }
        out.addInt32("loss.aff_pos_count", shape: [1], [Int32(v.affPosCount)])
        out.addInt32("loss.aff_neg_count", shape: [1], [Int32(v.affNegCount)])
    }

    // MARK: Units

    static func replayPAR(_ gc: GoldenCase, into out: inout SafeTensorsWriter) throws {
        var par = PAR()
        if let d = gc.config["dilations"] as? [Int] { par.dilations = d }
        if let n = gc.config["num_iter"] as? Int { par.iterations = n }
        if let w1 = gc.config["w1"] as? Double { par.w1 = Float(w1) }
        if let w2 = gc.config["w2"] as? Double { par.w2 = Float(w2) }
        try echo(["par.image", "par.masks", "par.small.image", "par.small.masks"], from: gc, into: &out)
        for prefix in ["par.", "par.small."] where gc.file.contains(prefix + "image") {
            let image = try gc.tensor(prefix + "image"), masks = try gc.tensor(prefix + "masks")
            let (b, h, w) = (image.shape[0], image.shape[2], image.shape[3])
            let c = masks.shape[1]
            let resized = Tensor(zeros: [b, c, h, w]), kernels = Tensor(zeros: [b, 1, par.neighbourCount, h, w])
            let refined = Tensor(zeros: [b, c, h, w])
            for i in 0..<b {
                let m = try masks.item(i)
                let r = try par.resizeMasks(m, h: h, w: w)
                (resized.data + i * c * h * w).update(from: r.data, count: r.count)
                let k = par.kernel(image: image.data + i * 3 * h * w, height: h, width: w)
                (kernels.data + i * k.count).update(from: k.data, count: k.count)
                let o = try par.refine(image: image.data + i * 3 * h * w, height: h, width: w, masks: m)
                (refined.data + i * c * h * w).update(from: o.data, count: o.count)
            }
            out.add(prefix + "out", refined)
            if prefix == "par." { out.add("par.masks_resized", resized); out.add("par.kernel", kernels) }
        }
    }

    static func replayRandomWalk(_ gc: GoldenCase, into out: inout SafeTensorsWriter) throws {
        let cams = try gc.tensor("rw.cams"), aff = try gc.tensor("rw.aff"), cls = try gc.tensor("rw.cls_label")
        let mask = try gc.int32s("rw.mask")
        try echo(["rw.cams", "rw.aff", "rw.cls_label", "rw.mask", "rw.label_map"], from: gc, into: &out)
        let low = Float(gc.config["bkg_low"] as? Double ?? 0.35), high = Float(gc.config["bkg_high"] as? Double ?? 0.55)
        let eps = Float(gc.config["norm_eps"] as? Double ?? 0.1)
        out.add("rw.out_low", try RandomWalk.propagate(cams: cams, aff: aff, mask: mask, clsLabel: cls, backgroundScore: low, normEps: eps))
        out.add("rw.out_high", try RandomWalk.propagate(cams: cams, aff: aff, mask: mask, clsLabel: cls, backgroundScore: high, normEps: eps))
        out.add("rw.out_nomask", try RandomWalk.propagate(cams: cams, aff: aff, mask: nil, clsLabel: cls, backgroundScore: low, normEps: eps))
        let entry = try gc.file.entry("rw.label_map")
        let (b, h, w) = (entry.shape[0], entry.shape[1], entry.shape[2])
        let grid = ImageOps.stage4Grid(height: h, width: w, strides: ModelConfig.methodStrides)
        let n = grid.h * grid.w
        out.addInt32("rw.aff_label", shape: [b, n, n],
                     RandomWalk.affinityLabel(labels: try gc.int32s("rw.label_map"), batch: b, height: h, width: w,
                                              grid: grid, mask: mask))
    }

    static func replayAdamW(_ gc: GoldenCase, into out: inout SafeTensorsWriter) throws {
        var config = TrainConfig()
        if let b = gc.config["betas"] as? [Double] { config.betas = b }
        if let e = gc.config["eps"] as? Double { config.adamEps = e }
        if let v = gc.config["warmup_iters"] as? Int { config.warmupIters = v }
        if let v = gc.config["warmup_ratio"] as? Double { config.warmupRatio = v }
        if let v = gc.config["max_iters"] as? Int { config.maxIters = v }
        if let v = gc.config["power"] as? Double { config.power = v }
        guard let baseLR = gc.config["base_lr"] as? [Double], let wd = gc.config["weight_decay"] as? [Double] else {
            throw AFAError.invalidInput("\(gc.path): PolyWarmupAdamW unit needs base_lr and weight_decay in its config")
        }
        let steps = gc.config["steps"] as? Int ?? 0
        try echo((0..<baseLR.count).flatMap { i in
            ["opt.p\(i).param", "opt.p\(i).exp_avg", "opt.p\(i).exp_avg_sq"] + (0..<steps).map { "opt.p\(i).grad.\($0)" }
        } + ["sched.step"], from: gc, into: &out)
        var params: [Parameter] = []
        var groups: [PolyWarmupAdamW.Group] = []
        for i in 0..<baseLR.count {
            let v = try gc.tensor("opt.p\(i).param")
            let p = Parameter(name: "p\(i)", shape: v.shape)
            try p.value.assign(from: v)
            params.append(p)
            groups.append(.init(name: "group\(i)", parameters: [p], baseLR: baseLR[i], lr: baseLR[i], weightDecay: wd[i]))
        }
        let opt = PolyWarmupAdamW(groups: groups, config: config, globalStep: gc.config["global_step_before"] as? Int ?? 0)
        let adamStep = gc.config["adam_step_before"] as? Int ?? 0
        for (i, p) in params.enumerated() {
            let st = PolyWarmupAdamW.State(shape: p.shape)
            st.step = adamStep
            try st.expAvg.assign(from: try gc.tensor("opt.p\(i).exp_avg"))
            try st.expAvgSq.assign(from: try gc.tensor("opt.p\(i).exp_avg_sq"))
            opt.state[p.name] = st
        }
        var lrs: [Float] = []
        let grads = Gradients(for: params)
        for s in 0..<steps {
            for (i, p) in params.enumerated() { try grads[p].assign(from: try gc.tensor("opt.p\(i).grad.\(s)")) }
            lrs += opt.step(grads).map { Float($0) }
            for (i, p) in params.enumerated() {
                out.add("opt.p\(i).after.\(s)", p.value.copy())
                out.add("opt.p\(i).exp_avg.after.\(s)", opt.state[p.name]!.expAvg.copy())
                out.add("opt.p\(i).exp_avg_sq.after.\(s)", opt.state[p.name]!.expAvgSq.copy())
            }
        }
        out.add("opt.lr", try Tensor(shape: [steps, baseLR.count], values: lrs))
        if gc.file.contains("sched.step") {
            let mult = try gc.int32s("sched.step").map { s -> Float in
                PolyWarmupAdamW.lrMultiplier(step: Int(s), config: config).map { Float($0) } ?? .nan
            }
            out.add("sched.lr_mult", try Tensor(shape: [mult.count], values: mult))
        }
    }

    /// Dense CRF alone: the parameters come from the metadata `crf` (JSON, the reference's names).
    static func replayCRF(_ gc: GoldenCase, into out: inout SafeTensorsWriter) throws {
        guard let text = gc.file.metadata["crf"], let data = text.data(using: .utf8) else {
            throw AFAError.invalidInput("\(gc.path): CRF unit without 'crf' parameters in its metadata")
        }
        let crf: DenseCRF
        do { crf = try JSONDecoder().decode(DenseCRF.self, from: data) } catch {
            throw AFAError.invalidInput("\(gc.path): metadata 'crf' does not decode: \(error)")
        }
        try echo(["crf.image", "crf.prob", "label.fragile"], from: gc, into: &out)
        let image = try gc.file.entry("crf.image"), prob = try gc.tensor("crf.prob")
        guard image.shape.count == 3, image.shape[2] == 3, prob.rank == 3,
              prob.shape[1] == image.shape[0], prob.shape[2] == image.shape[1] else {
            throw AFAError.invalidInput("\(gc.path): crf.image \(image.shape) and crf.prob \(prob.shape) do not match (H,W,3 and C,H,W)")
        }
        let rgb = RGBImage(width: image.shape[1], height: image.shape[0], pixels: try gc.file.integers("crf.image").map { UInt8(clamping: $0) })
        var first = crf
        first.iterations = 1
        out.add("crf.q1", try first.marginals(image: rgb, probabilities: prob))
        let q = try crf.marginals(image: rgb, probabilities: prob)
        out.add("crf.q", q)
        out.addInt32("crf.label", shape: [prob.shape[1], prob.shape[2]], DenseCRF.argmaxLabels(q).values.map { Int32($0) })
    }
}
