import AFA
import Foundation
import XCTest

final class DataTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "afa-data-\(UUID().uuidString)"
        try SyntheticDataset(trainCount: 6, valCount: 2, size: 48, classes: 3, seed: 4).write(to: dir)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func testSyntheticDatasetParses() throws {
        let ds = try VOCDataset(root: dir, split: "train", requireMasks: true)
        XCTAssertEqual(ds.count, 6)
        XCTAssertEqual(ds.classNames, ["background", "disc", "square", "triangle"])
        XCTAssertTrue(ds.imageLabels.contains { !$0.isEmpty })
    }

    func testLabelsDerivedFromMasksMatchClsLabels() throws {
        let withFile = try VOCDataset(root: dir, split: "train", requireMasks: true)
        try FileManager.default.removeItem(atPath: dir + "/cls_labels.txt")
        let derived = try VOCDataset(root: dir, split: "train", requireMasks: false)
        XCTAssertEqual(derived.imageLabels, withFile.imageLabels)
    }

    func testMissingImageAndBadLabelValueAreReportedTogether() throws {
        let ds = try VOCDataset(root: dir, split: "train", requireMasks: true)
        try FileManager.default.removeItem(atPath: ds.imagePath(0))
        let m = try ImageCodec.readLabels(ds.maskPath(1)!)
        var bad = m; bad.values[0] = 9
        try ImageCodec.writeLabelPNG(bad, to: ds.maskPath(1)!)
        XCTAssertThrowsError(try VOCDataset(root: dir, split: "train", requireMasks: true)) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains(ds.imagePath(0)), text)
            XCTAssertTrue(text.contains(ds.maskPath(1)!) && text.contains("[9]"), text)
        }
    }

    func testUnknownClassInClsLabelsIsReported() throws {
        try "train_00000 1 7\n".write(toFile: dir + "/cls_labels.txt", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try VOCDataset(root: dir, split: "train", requireMasks: false)) { e in
            XCTAssertTrue("\(e)".contains("'7'"), "\(e)")
            XCTAssertTrue("\(e)".contains("no line for image train_00001"), "\(e)")
        }
    }

    /// The rescale averages what a downscale covers, as the method's pipeline (Pillow's bilinear) does:
    /// a 4 → 2 row weighs 3/7, 3/7, 1/7 of the pixels under each output pixel (plain two-tap bilinear
    /// would give 35 and 175).
    func testRescaleAveragesLikeTheMethodsPipeline() {
        let row = RGBImage(width: 4, height: 1, pixels: [0, 70, 140, 210].flatMap { [UInt8($0), UInt8($0), UInt8($0)] })
        XCTAssertEqual(Augmentation.resize(row, width: 2, height: 1).pixels, [50, 50, 50, 160, 160, 160])
    }

    /// Pixels made by Pillow 13.0 (`Image.resize(size, Image.BILINEAR)`) from a seeded random 9×7 picture:
    /// down (by up to 3.5), up, one axis only, mixed.
    func testRescaleIsPillowsBilinearToTheBit() {
        let source: [UInt8] = [139, 74, 229, 241, 169, 65, 6, 160, 149, 106, 38, 175, 188, 205, 175, 229, 98, 249, 10, 148, 95, 86, 147, 198, 66, 39, 106, 213, 171, 45, 167, 57, 69, 81, 55, 14, 153, 178, 215, 76, 52, 39, 250, 72, 215, 50, 161, 223, 112, 172, 161, 233, 38, 17, 89, 1, 221, 6, 242, 127, 143, 6, 60, 210, 94, 25, 166, 33, 249, 189, 12, 204, 33, 57, 124, 30, 199, 149, 202, 119, 72, 220, 3, 209, 122, 136, 147, 77, 133, 82, 115, 87, 162, 230, 70, 71, 240, 62, 47, 184, 31, 34, 63, 65, 146, 197, 142, 253, 81, 133, 240, 113, 30, 247, 103, 122, 31, 19, 42, 129, 141, 136, 33, 149, 161, 0, 178, 141, 107, 35, 107, 130, 72, 27, 217, 254, 99, 13, 195, 206, 59, 228, 235, 202, 183, 47, 69, 179, 82, 35, 71, 159, 110, 121, 77, 87, 3, 126, 44, 253, 233, 225, 90, 119, 137, 120, 30, 55, 33, 165, 87, 216, 229, 167, 3, 41, 109, 203, 129, 219, 63, 101, 207, 156, 27, 220, 93, 29, 143]
        let cases: [(width: Int, height: Int, pixels: [UInt8])] = [
            (4, 3, [141, 112, 104, 126, 102, 126, 144, 102, 181, 105, 120, 127, 123, 97, 154, 131, 90, 103, 165, 80, 94, 112, 105, 145, 150, 125, 106, 139, 124, 105, 118, 115, 114, 108, 100, 153]),
            (13, 10, [139, 74, 229, 194, 125, 141, 187, 167, 84, 24, 161, 143, 68, 85, 165, 131, 89, 175, 188, 205, 175, 216, 131, 226, 145, 117, 190, 16, 148, 103, 68, 147, 174, 77, 97, 156, 66, 39, 106, 180, 127, 128, 191, 117, 95, 165, 107, 69, 59, 103, 74, 99, 110, 150, 130, 116, 167, 126, 121, 100, 205, 95, 190, 160, 111, 205, 37, 156, 166, 84, 159, 175, 127, 104, 122, 158, 38, 57, 182, 129, 89, 152, 115, 86, 120, 90, 70, 99, 47, 30, 140, 113, 113, 146, 123, 144, 99, 47, 92, 193, 54, 175, 162, 87, 207, 50, 139, 195, 81, 168, 167, 153, 123, 100, 225, 58, 31, 95, 9, 212, 51, 130, 164, 43, 181, 109, 130, 26, 63, 181, 64, 43, 193, 78, 97, 162, 34, 239, 183, 20, 215, 131, 33, 175, 34, 73, 131, 34, 166, 145, 112, 159, 112, 204, 115, 69, 174, 2, 213, 124, 95, 174, 86, 154, 125, 98, 95, 79, 129, 89, 98, 166, 80, 120, 208, 57, 133, 218, 48, 111, 187, 43, 88, 125, 46, 72, 70, 95, 128, 119, 122, 166, 199, 134, 190, 171, 48, 220, 143, 76, 200, 112, 106, 155, 88, 127, 73, 83, 94, 117, 117, 78, 122, 199, 93, 58, 206, 95, 39, 198, 86, 42, 172, 70, 66, 83, 77, 122, 99, 90, 186, 153, 102, 240, 90, 131, 229, 104, 82, 234, 116, 59, 192, 110, 121, 55, 58, 75, 92, 63, 70, 97, 143, 133, 33, 145, 152, 14, 157, 152, 44, 164, 135, 108, 66, 115, 121, 55, 75, 168, 81, 37, 217, 211, 108, 70, 191, 137, 90, 180, 173, 118, 195, 204, 155, 163, 108, 113, 151, 61, 69, 170, 96, 35, 115, 140, 68, 108, 134, 86, 126, 95, 90, 40, 115, 72, 102, 149, 139, 208, 182, 223, 180, 108, 69, 170, 118, 63, 157, 145, 78, 142, 198, 143, 176, 157, 127, 168, 109, 100, 100, 64, 68, 121, 120, 131, 117, 123, 152, 93, 87, 140, 77, 83, 127, 122, 109, 153, 181, 141, 188, 90, 119, 137, 106, 71, 93, 100, 61, 62, 40, 155, 85, 146, 204, 136, 150, 171, 149, 3, 41, 109, 141, 102, 185, 149, 118, 214, 70, 95, 208, 135, 44, 217, 127, 28, 184, 93, 29, 143]),
            (9, 3, [160, 100, 148, 159, 137, 80, 67, 82, 72, 148, 110, 160, 135, 103, 133, 229, 68, 225, 32, 134, 156, 85, 169, 172, 167, 56, 61, 158, 49, 198, 100, 135, 156, 108, 102, 68, 121, 81, 120, 182, 76, 100, 197, 80, 86, 135, 73, 87, 48, 116, 138, 174, 109, 186, 158, 113, 106, 151, 105, 98, 132, 186, 124, 160, 111, 117, 108, 79, 61, 135, 149, 125, 112, 99, 134, 65, 87, 125, 157, 116, 194]),
            (5, 7, [173, 121, 153, 81, 124, 141, 178, 141, 192, 93, 132, 162, 71, 93, 145, 184, 114, 53, 120, 94, 87, 135, 86, 122, 124, 135, 209, 168, 104, 93, 57, 105, 169, 138, 78, 62, 182, 42, 186, 81, 70, 154, 116, 149, 109, 168, 69, 173, 97, 119, 119, 205, 72, 87, 179, 47, 59, 139, 101, 192, 96, 88, 228, 79, 80, 102, 114, 120, 48, 142, 141, 78, 64, 69, 172, 227, 155, 46, 208, 171, 134, 155, 92, 61, 83, 112, 86, 136, 176, 138, 99, 84, 98, 107, 160, 106, 100, 106, 149, 124, 96, 213, 118, 33, 181]),
            (3, 2, [127, 105, 117, 148, 88, 135, 115, 111, 141, 138, 117, 124, 140, 104, 96, 112, 103, 138]),
            (2, 2, [134, 97, 121, 129, 101, 141, 138, 114, 113, 125, 102, 121]),
        ]
        let image = RGBImage(width: 9, height: 7, pixels: source)
        for c in cases {
            XCTAssertEqual(Augmentation.resize(image, width: c.width, height: c.height).pixels, c.pixels, "\(c.width)×\(c.height)")
        }
    }

    func testAugmentationKeepsImageAndBoxConsistent() throws {
        var img = RGBImage(width: 30, height: 20)
        for i in img.pixels.indices { img.pixels[i] = 255 }
        let aug = Augmentation(cropSize: 48)
        let c = 48
        let out = UnsafeMutablePointer<Float>.allocate(capacity: 3 * c * c)
        defer { out.deallocate() }
        for seed in 0..<20 {
            var rng = RNG(seed: UInt64(seed))
            let box = aug.apply(img, rng: &rng, into: out)
            XCTAssertTrue(box.height > 0 && box.width > 0)
            for ch in 0..<3 {
                let white = (255 - ImageOps.mean[ch]) / ImageOps.std[ch], pad = -ImageOps.mean[ch] / ImageOps.std[ch]
                for y in 0..<c { for x in 0..<c {
                    let v = out[ch * c * c + y * c + x]
                    XCTAssertEqual(v, box.contains(y: y, x: x) ? white : pad, accuracy: 1e-5, "seed \(seed) (\(y), \(x)) box \(box)")
                } }
            }
        }
    }

    /// The reference trainer's protocol scores the segmentation exactly as the single-scale protocol does
    /// and takes its CAMs from the training step's multi-scale pass, so those rows differ.
    func testReferenceProtocolSharesTheSegmentationRowAndNotTheCAMs() throws {
        let ds = try VOCDataset(root: dir, split: "val", requireMasks: true)
        let recipe = try TrainRecipe.defaults(preset: "tiny", numClasses: ds.numClasses, iterations: 10)
        let model = try AFAModel(config: recipe.model)
        model.initialize(seed: 3, linearStd: 0.2)
        let seg = Segmenter(model: model, recipe: recipe, classNames: ds.classNames)
        let single = try Evaluator(scales: [1], flip: false).evaluate(seg, dataset: ds)
        let reference = try Evaluator(camSource: .training).evaluate(seg, dataset: ds)
        XCTAssertEqual(reference.segMIoU, single.segMIoU)
        XCTAssertEqual(reference.perClassIoU["seg"]!.map { $0 ?? -1 }, single.perClassIoU["seg"]!.map { $0 ?? -1 })
        XCTAssertNotEqual(reference.perClassIoU["cam"]!.map { $0 ?? -1 }, single.perClassIoU["cam"]!.map { $0 ?? -1 })
        for v in [reference.camMIoU, reference.affMIoU] { XCTAssertTrue((0...1).contains(v)) }
    }

    func testMeanIoUOnHandMadeConfusionMatrix() {
        var cm = ConfusionMatrix(classes: 3)
        // truth 0: 3 px (2 right, 1 → 1); truth 1: 2 px (1 right, 1 → 0); class 2 absent everywhere
        cm.add(truth: [0, 0, 0, 1, 1, 255], prediction: [0, 0, 1, 1, 0, 2])
        let iou = cm.iou
        XCTAssertEqual(iou[0]!, 2.0 / 4.0, accuracy: 1e-12)
        XCTAssertEqual(iou[1]!, 1.0 / 3.0, accuracy: 1e-12)
        XCTAssertNil(iou[2])
        XCTAssertEqual(cm.meanIoU, (0.5 + 1.0 / 3.0) / 2, accuracy: 1e-12)
        XCTAssertEqual(cm.pixelAccuracy, 3.0 / 5.0, accuracy: 1e-12)
    }
}
