import Foundation
import ImageIO
import SafeTensors
import TensorCore

/// What segmenting one image gives.
public struct Segmentation {
    /// Class index per pixel (argmax of the averaged segmentation logits).
    public var labels: LabelMap
    /// Softmax probabilities (C, H, W).
    public var probabilities: Tensor
    /// Multi-label classifier probabilities (C − 1): sigmoid of the class scores, averaged over the flip.
    public var classProbabilities: [Float]
    /// Class activation maps (C − 1, H, W), per class min–max normalised; nil unless requested.
    public var cams: Tensor?
}

/// Loads a trained model once and segments images: the library API behind `afa infer` and `afa eval`.
public final class Segmenter {
    public let model: AFAModel
    public let recipe: TrainRecipe
    public let classNames: [String]

    /// Loads a checkpoint written by `afa train` (model weights and the recipe in its metadata).
    public init(checkpoint path: String) throws {
        let ck = try Checkpoint.open(path)
        recipe = ck.recipe
        model = try AFAModel(config: ck.recipe.model)
        try model.loadStateDict(ck.file, ignorePrefixes: Checkpoint.nonModelPrefixes)
        model.setTraining(false)
        classNames = ck.classNames ?? (0..<recipe.model.numClasses).map { $0 == 0 ? "background" : "class\($0)" }
    }

    public init(model: AFAModel, recipe: TrainRecipe, classNames: [String]) {
        self.model = model; self.recipe = recipe; self.classNames = classNames
        model.setTraining(false)
    }

    /// Segments an RGB image: logits of the image and (with `flip`) its mirror at each scale, resized to
    /// the image and summed; argmax per pixel. With `cams`, also the fused multi-scale CAMs.
    public func segment(_ image: RGBImage, scales: [Double] = [1.0], flip: Bool = true, cams wantCAMs: Bool = false) throws -> Segmentation {
        let x = Augmentation.normalized(image)
        return try segment(normalized: x, scales: scales, flip: flip, cams: wantCAMs)
    }

    /// The same for a normalised (1, 3, H, W) tensor.
    public func segment(normalized x: Tensor, scales: [Double] = [1.0], flip: Bool = true, cams wantCAMs: Bool = false) throws -> Segmentation {
        model.setTraining(false)
        let (h, w) = (x.shape[2], x.shape[3])
        let c = model.config.numClasses, k = c - 1
        let sum = Tensor(zeros: [1, c, h, w])
        var clsProb = [Float](repeating: 0, count: k)
        var passes: Float = 0
        for s in scales {
            let sh = max(16, Int(s * Double(h))), sw = max(16, Int(s * Double(w)))
            let xs = try ImageOps.resize(x, height: sh, width: sw)
            let batch = flip ? ImageOps.withFlips(xs) : xs
            let out = try GradMode.withoutGrad { try model.forward(batch) }
            let up = try ImageOps.resize(out.seg, height: h, width: w)
            let plane = h * w
            for ch in 0..<c {
                let dst = sum.data + ch * plane
                let a = up.data + ch * plane
                for p in 0..<plane { dst[p] += a[p] }
                if flip {
                    let f = up.data + (c + ch) * plane
                    for y in 0..<h { for xx in 0..<w { dst[y * w + xx] += f[y * w + (w - 1 - xx)] } }
                }
            }
            if s == scales.first {
                for i in 0..<batch.shape[0] { for j in 0..<k { clsProb[j] += 1 / (1 + Foundation.exp(-out.cls.data[i * k + j])) } }
                passes += Float(batch.shape[0])
            }
        }
        for j in 0..<k { clsProb[j] /= max(passes, 1) }
        // softmax over classes and argmax
        let plane = h * w
        let probs = Tensor(zeros: [c, h, w])
        var labels = [UInt8](repeating: 0, count: plane)
        for p in 0..<plane {
            var m = -Float.infinity, best = 0
            for ch in 0..<c where sum.data[ch * plane + p] > m { m = sum.data[ch * plane + p]; best = ch }
            var z: Float = 0
            for ch in 0..<c { let e = Foundation.exp(sum.data[ch * plane + p] - m); probs.data[ch * plane + p] = e; z += e }
            for ch in 0..<c { probs.data[ch * plane + p] /= z }
            labels[p] = UInt8(best)
        }
        var camMaps: Tensor?
        if wantCAMs {
            let cam = try model.multiScaleCAM(x, scales: scales)
            camMaps = try cam.cams.reshaped([k, h, w])
        }
        return Segmentation(labels: LabelMap(width: w, height: h, values: labels), probabilities: probs,
                            classProbabilities: clsProb, cams: camMaps)
    }
}

/// Pictures people can look at.
public enum Visualization {
    /// The image blended with the VOC colours of the labels (background and ignore left as they are).
    public static func overlay(_ image: RGBImage, labels: LabelMap, alpha: Float = 0.55) -> RGBImage {
        var out = image
        for p in 0..<(image.width * image.height) {
            let l = Int(labels.values[p])
            guard l != 0 && l != 255 else { continue }
            let (r, g, b) = VOCPalette.color(l)
            for (c, v) in [r, g, b].enumerated() {
                out.pixels[3 * p + c] = UInt8(min(255, (1 - alpha) * Float(image.pixels[3 * p + c]) + alpha * Float(v)))
            }
        }
        return out
    }

    /// A heat map (blue → red) of a [0, 1] map blended over the image.
    public static func heatmap(_ image: RGBImage, map: UnsafePointer<Float>, alpha: Float = 0.5) -> RGBImage {
        var out = image
        for p in 0..<(image.width * image.height) {
            let v = min(max(map[p], 0), 1)
            let col: [Float] = [255 * min(1, 2 * v), 255 * (1 - abs(2 * v - 1)), 255 * min(1, 2 * (1 - v))]
            for c in 0..<3 { out.pixels[3 * p + c] = UInt8(min(255, (1 - alpha) * Float(image.pixels[3 * p + c]) + alpha * col[c])) }
        }
        return out
    }
}
