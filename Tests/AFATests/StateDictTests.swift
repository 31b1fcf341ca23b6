import AFA
import Foundation
import Layers
import SafeTensors
import XCTest

final class StateDictTests: XCTestCase {
    func tinyModel(classes: Int = 21) throws -> AFAModel {
        let m = try AFAModel(config: try ModelConfig.preset("tiny", numClasses: classes))
        m.initialize(seed: 1)
        return m
    }

    func testRoundTripWithDDPPrefix() throws {
        let a = try tinyModel(), b = try tinyModel()
        b.initialize(seed: 2)
        var w = SafeTensorsWriter()
        a.saveStateDict(into: &w, prefix: "module.")
        try b.loadStateDict(try SafeTensorsFile(data: try w.encoded()))
        for (p, q) in zip(a.parameters, b.parameters) { XCTAssertEqual(p.value.array, q.value.array, p.name) }
        XCTAssertEqual(a.stateDictShapes.count, 195)
    }

    func testMissingExtraAndMisshapedKeysAreListedTogether() throws {
        let a = try tinyModel()
        var w = SafeTensorsWriter()
        a.saveStateDict(into: &w)
        w.remove("encoder.norm4.weight")
        w.add("encoder.extra.weight", Tensor(zeros: [3]))
        w.add("classifier.weight", Tensor(zeros: [5, 64, 1, 1]))
        XCTAssertThrowsError(try a.loadStateDict(try SafeTensorsFile(data: try w.encoded(), path: "bad.safetensors"))) { e in
            guard let err = e as? StateDictError else { return XCTFail("unexpected error \(e)") }
            XCTAssertEqual(err.missing, ["encoder.norm4.weight"])
            XCTAssertEqual(err.unexpected, ["encoder.extra.weight"])
            XCTAssertEqual(err.misshaped.map(\.0), ["classifier.weight"])
            let text = err.description
            for s in ["bad.safetensors", "encoder.norm4.weight", "encoder.extra.weight", "classifier.weight", "[5, 64, 1, 1]", "[20, 64, 1, 1]"] {
                XCTAssertTrue(text.contains(s), "message lacks \(s): \(text)")
            }
        }
    }

    func testPretrainedEncoderIgnoresHeadAndKeepsDecoder() throws {
        let a = try tinyModel(), b = try tinyModel()
        b.initialize(seed: 5)
        var w = SafeTensorsWriter()
        for p in a.encoder.parameters { w.add(String(p.name.dropFirst("encoder.".count)), p.value) }
        w.add("head.weight", Tensor(zeros: [1000, 64]))
        w.add("head.bias", Tensor(zeros: [1000]))
        let decoderBefore = b.decoder.parameters.map { $0.value.array }
        try b.loadPretrainedEncoder(try SafeTensorsFile(data: try w.encoded()))
        for (p, q) in zip(a.encoder.parameters, b.encoder.parameters) { XCTAssertEqual(p.value.array, q.value.array) }
        XCTAssertEqual(b.decoder.parameters.map { $0.value.array }, decoderBefore)
    }

    /// The model's leaf index (built once at init) is exactly what reflection over the model finds.
    func testLeafIndexEqualsReflection() throws {
        let model = try AFAModel(config: try ModelConfig.preset("mit_b0", numClasses: 5))
        let reflected = model as any Module
        XCTAssertEqual(model.parameters.map(ObjectIdentifier.init), reflected.parameters.map(ObjectIdentifier.init))
        XCTAssertEqual(model.buffers.map(ObjectIdentifier.init), reflected.buffers.map(ObjectIdentifier.init))
        XCTAssertEqual(model.counters.map(ObjectIdentifier.init), reflected.counters.map(ObjectIdentifier.init))
        XCTAssertGreaterThan(model.parameters.count, 100)
        XCTAssertEqual(model.stateDictShapes.first?.0, "encoder.patch_embed1.proj.weight")
    }

    func testValueCountFromTheConfigurationMatchesTheModel() throws {
        for preset in ["tiny", "mit_b0", "mit_b1"] {
            var config = try ModelConfig.preset(preset, numClasses: 7)
            config.srRatios = preset == "tiny" ? [8, 4, 2, 1] : config.srRatios
            let model = try AFAModel(config: config)
            let actual = model.stateDictShapes.reduce(0) { $0 + $1.1.reduce(1, *) }
            XCTAssertEqual(config.stateDictValueCount, actual, preset)
        }
        var huge = try ModelConfig.preset("tiny")
        huge.embedDims = [Int.max / 2, 32, 40, 64]
        XCTAssertNil(huge.stateDictValueCount)
    }

    func testCheckpointWhoseRecipeOutgrowsTheFileIsRefusedBeforeBuilding() throws {
        let model = try tinyModel(classes: 4)
        var recipe = try TrainRecipe.defaults(preset: "tiny", numClasses: 4, iterations: 10)
        let data = try Checkpoint.encode(model: model, optimizer: PolyWarmupAdamW(model: model, config: recipe.train), streams: [RNG(seed: 0)],
                                         recipe: recipe, classNames: ["a", "b", "c", "d"], iteration: 0)
        XCTAssertNoThrow(try Checkpoint.open(data: data, name: "ok"))
        // The same tensors under a recipe that claims a mit_b5-sized model with 5000 classes.
        recipe.model = try ModelConfig.preset("mit_b5", numClasses: 5000)
        let big = try Checkpoint.encode(model: model, optimizer: PolyWarmupAdamW(model: model, config: recipe.train), streams: [RNG(seed: 0)],
                                        recipe: recipe, classNames: ["a", "b", "c", "d"], iteration: 0)
        XCTAssertThrowsError(try Segmenter(checkpointData: big, name: "big")) { e in
            XCTAssertTrue("\(e)".contains("but the file holds only"), "\(e)")
        }
    }
}
