import XCTest
@testable import AFA

final class AffinityLabelTests: XCTestCase {
    /// A 32×32 map, a 2×2 grid of 16×16 cells, each built so that the grid point's own pixel and the
    /// cell's most frequent label differ (or tie).
    func testNearestAndMajoritySampling() throws {
        let (h, w) = (32, 32)
        var map = [Int32](repeating: 0, count: h * w)
        func cell(_ gy: Int, _ gx: Int, _ labelAt: (Int) -> Int32) {   // index in the cell, row-major
            for y in 0..<16 { for x in 0..<16 { map[(gy * 16 + y) * w + gx * 16 + x] = labelAt(y * 16 + x) } }
        }
        cell(0, 0) { $0 == 0 ? 2 : 1 }                            // one pixel of 2 at the grid point, 255 of 1
        cell(0, 1) { $0 % 16 < 8 ? 4 : 3 }                        // 128 / 128, the grid point's 4 among the tied
        cell(1, 0) { $0 < 56 ? 1 : $0 < 156 ? 5 : 3 }             // 56 of 1 (grid point), 100 of 5, 100 of 3
        cell(1, 1) { $0 < 56 ? 255 : 0 }                          // the grid point ignored, 200 of 0

        func grid(_ aff: [Int32]) -> [[Int32]] { (0..<4).map { p in Array(aff[(p * 4)..<(p * 4 + 4)]) } }
        let nearest = RandomWalk.affinityLabel(labels: map, batch: 1, height: h, width: w, grid: (2, 2), mask: nil)
        XCTAssertEqual(nearest, RandomWalk.affinityLabel(labels: map, batch: 1, height: h, width: w, grid: (2, 2), mask: nil, sampling: .nearest))
        // grid labels 2, 4, 1, ignore: pairs with the ignored point are ignored
        XCTAssertEqual(grid(nearest), [[1, 0, 0, 255], [0, 1, 0, 255], [0, 0, 1, 255], [255, 255, 255, 255]])

        let majority = RandomWalk.affinityLabel(labels: map, batch: 1, height: h, width: w, grid: (2, 2), mask: nil, sampling: .majority)
        // grid labels 1, 4 (tie, the grid point's), 3 (tie of 5 and 3 without the grid point's: the smaller), 0
        XCTAssertEqual(grid(majority), [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])

        // two points with the same majority label: cell (0, 1) made all 1 like cell (0, 0)
        cell(0, 1) { _ in 1 }
        let same = RandomWalk.affinityLabel(labels: map, batch: 1, height: h, width: w, grid: (2, 2), mask: nil, sampling: .majority)
        XCTAssertEqual(grid(same)[0], [1, 1, 0, 0])
    }

    /// A 40×40 map on a 3×3 grid (a crop not divisible by 16): grid points at PyTorch's nearest sources
    /// 0, 13, 26 in each axis.
    func testGridOfACropNotDivisibleBy16() {
        let (h, w) = (40, 40)
        let map = (0..<(h * w)).map { p -> Int32 in Int32((p / w >= 13 ? 1 : 0) + (p % w >= 26 ? 2 : 0)) }
        let aff = RandomWalk.affinityLabel(labels: map, batch: 1, height: h, width: w, grid: (3, 3), mask: nil)
        XCTAssertEqual(aff.count, 81)
        // grid labels 0 0 2 / 1 1 3 / 1 1 3: point 0 shares its label with point 1 only, point 4 with 3, 6, 7
        XCTAssertEqual(Array(aff[0..<9]), [1, 1, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(Array(aff[36..<45]), [0, 0, 0, 1, 1, 0, 1, 1, 0])
    }

    func testRecipeKey() throws {
        let decode = { (json: String) in try JSONDecoder().decode(TrainConfig.self, from: Data(json.utf8)) }
        XCTAssertEqual(try decode("{}").affLabelSampling, .nearest)
        XCTAssertEqual(try decode(#"{"aff_label_sampling": "majority"}"#).affLabelSampling, .majority)
        XCTAssertThrowsError(try decode(#"{"aff_label_sampling": "mode"}"#))
        var config = TrainConfig()
        config.affLabelSampling = .majority
        let text = String(decoding: try JSONEncoder().encode(config), as: UTF8.self)
        XCTAssertTrue(text.contains(#""aff_label_sampling":"majority""#), text)
        XCTAssertEqual(try decode(text), config)
    }

    /// The tiny recipe samples by majority, the paper's recipe as the method does; a recipe written before
    /// the key existed (an older run's config.json or checkpoint) resumes with the sampling it was trained with.
    func testDefaultsPerPreset() throws {
        XCTAssertEqual(try TrainRecipe.defaults(preset: "tiny", numClasses: 5, iterations: nil).train.affLabelSampling, .majority)
        XCTAssertEqual(try TrainRecipe.defaults(preset: "mit_b1", numClasses: 20, iterations: nil).train.affLabelSampling, .nearest)
        var recipe = try TrainRecipe.defaults(preset: "tiny", numClasses: 5, iterations: 100)
        var object = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(recipe)) as? [String: Any])
        var train = try XCTUnwrap(object["train"] as? [String: Any])
        XCTAssertEqual(train.removeValue(forKey: "aff_label_sampling") as? String, "majority")
        object["train"] = train
        let older = try JSONDecoder().decode(TrainRecipe.self, from: JSONSerialization.data(withJSONObject: object))
        XCTAssertEqual(older.train.affLabelSampling, .nearest)
        recipe.train.affLabelSampling = .nearest
        XCTAssertEqual(older, recipe)
    }

    /// The tiny recipe trains on the finer token grid (stages 3 and 4 at 1/8: 12 × 12 tokens at crop 96)
    /// and samples its affinity labels on that grid, at crops under 192; the paper's recipe, the tiny one
    /// at larger crops and the bare model preset (what the golden vectors use) keep the method's 1/16.
    func testTinyRecipeUsesTheFinerTokenGrid() throws {
        let tiny = try TrainRecipe.defaults(preset: "tiny", numClasses: 5, iterations: nil)
        XCTAssertEqual(tiny.model.strides, [4, 2, 1, 1])
        XCTAssertEqual(try TrainRecipe.defaults(preset: "mit_b1", numClasses: 20, iterations: nil).model.strides, [4, 2, 2, 1])
        XCTAssertEqual(try ModelConfig.preset("tiny", numClasses: 5).strides, ModelConfig.methodStrides)
        let refinement = LabelRefinement(config: tiny.train, strides: tiny.model.strides)
        let grid = ImageOps.stage4Grid(height: tiny.cropSize, width: tiny.cropSize, strides: refinement.strides)
        XCTAssertEqual(grid.h, 12)
        XCTAssertEqual(grid.w, 12)
        // the strides follow a crop given on the command line: finer only where the method's grid is coarse
        XCTAssertEqual(try TrainRecipe.defaults(preset: "tiny", numClasses: 5, iterations: nil, crop: 128).model.strides, [4, 2, 1, 1])
        XCTAssertEqual(try TrainRecipe.defaults(preset: "tiny", numClasses: 5, iterations: nil, crop: 176).model.strides, [4, 2, 1, 1])
        let large = try TrainRecipe.defaults(preset: "tiny", numClasses: 5, iterations: nil, crop: 320)
        XCTAssertEqual(large.model.strides, ModelConfig.methodStrides)
        XCTAssertEqual(large.cropSize, 320)
        XCTAssertEqual(try TrainRecipe.defaults(preset: "mit_b1", numClasses: 20, iterations: nil, crop: 96).model.strides, ModelConfig.methodStrides)
    }
}
