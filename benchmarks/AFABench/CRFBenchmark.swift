import AFA
import Foundation
import ImageIO
import SafeTensors
import TensorCore

/// Times the dense CRF on one image (`afa bench crf`): a VOC-sized input by default, or the image and
/// probabilities of a CRF case file (`crf.image`, `crf.prob`, as `make_crf_golden.py` writes them), so that
/// `benchmarks/compare_crf.py` can time pydensecrf on exactly the same input.
public enum CRFBenchmark {
    /// A deterministic input: an image of flat-coloured regions with mild noise, and probabilities that
    /// roughly follow the regions (the kind of input the CRF sees after a segmentation network).
    public static func syntheticInput(width w: Int, height h: Int, classes c: Int, seed: UInt64 = 7) -> (RGBImage, Tensor) {
        var rng = SplitMix(seed: seed)
        let regions = 12
        let centres = (0..<regions).map { _ in (rng.uniform() * Double(h), rng.uniform() * Double(w)) }
        let colours = (0..<regions).map { _ in (0..<3).map { _ in 20 + Int(rng.uniform() * 216) } }
        var pixels = [UInt8](repeating: 0, count: 3 * w * h)
        let probs = Tensor(zeros: [c, h, w])
        let plane = w * h
        for y in 0..<h {
            for x in 0..<w {
                var best = 0, bestD = Double.infinity
                for (r, (cy, cx)) in centres.enumerated() {
                    let dd = (Double(y) - cy) * (Double(y) - cy) + (Double(x) - cx) * (Double(x) - cx)
                    if dd < bestD { bestD = dd; best = r }
                }
                let i = y * w + x
                for ch in 0..<3 { pixels[3 * i + ch] = UInt8(clamping: colours[best][ch] + Int((rng.uniform() - 0.5) * 12)) }
                var logits = (0..<c).map { _ in Float(rng.uniform() * 2 - 1) }
                logits[best % c] += 1.2
                let m = logits.max()!
                let e = logits.map { expf($0 - m) }, z = e.reduce(0, +)
                for ch in 0..<c { probs.data[ch * plane + i] = e[ch] / z }
            }
        }
        return (RGBImage(width: w, height: h, pixels: pixels), probs)
    }

    /// Reads `crf.image` (H, W, 3 U8) and `crf.prob` (C, H, W) from a case file.
    public static func input(from path: String) throws -> (RGBImage, Tensor) {
        let f = try SafeTensorsFile(path: path)
        let e = try f.entry("crf.image"), prob = try f.tensor("crf.prob")
        guard e.shape.count == 3, e.shape[2] == 3, prob.rank == 3, prob.shape[1] == e.shape[0], prob.shape[2] == e.shape[1] else {
            throw AFAError.invalidInput("\(path): crf.image \(e.shape) and crf.prob \(prob.shape) do not match (H,W,3 and C,H,W)")
        }
        return (RGBImage(width: e.shape[1], height: e.shape[0], pixels: try f.integers("crf.image").map { UInt8(clamping: $0) }), prob)
    }

    public static func run(image: RGBImage, probabilities: Tensor, crf: DenseCRF, threads: Int, runs: Int) throws -> Measurement {
        try crf.validate()
        var failure: Error?
        let m = Harness.measure(name: "crf \(image.width)x\(image.height)x\(probabilities.shape[0]), \(crf.iterations) iterations",
                                threads: threads, runs: runs, minSeconds: 0, flops: 0, items: 1,
                                extra: ["width": "\(image.width)", "height": "\(image.height)", "classes": "\(probabilities.shape[0])",
                                        "iterations": "\(crf.iterations)"]) {
            do { _ = try crf.marginals(image: image, probabilities: probabilities) } catch { failure = error }
        }
        if let failure { throw failure }
        return m
    }
}

/// SplitMix64: a small, fixed generator for reproducible benchmark inputs.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
