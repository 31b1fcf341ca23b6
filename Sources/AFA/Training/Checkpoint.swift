import Foundation
import SafeTensors
import TensorCore

/// A training checkpoint: the model's state dict under its original keys, the optimiser state
/// (`optimizer.*`), the trainer's position (`trainer.iteration`, `trainer.rng`) and the recipe and
/// class names as JSON metadata.
public struct Checkpoint {
    public static let format = "afa-checkpoint-v1"
    static let nonModelPrefixes = ["optimizer.", "trainer."]

    public let file: SafeTensorsFile
    public let recipe: TrainRecipe
    public let classNames: [String]?
    public let iteration: Int

    /// Opens and validates a checkpoint (format, recipe, iteration).
    public static func open(_ path: String) throws -> Checkpoint {
        try open(file: try SafeTensorsFile(path: path), name: path)
    }

    /// Opens and validates a checkpoint held in memory; `name` stands for it in messages.
    public static func open(data: Data, name: String) throws -> Checkpoint {
        try open(file: try SafeTensorsFile(data: data, path: name), name: name)
    }

    static func open(file f: SafeTensorsFile, name path: String) throws -> Checkpoint {
        guard f.metadata["format"] == format else {
            throw AFAError.invalidInput("\(path): not an afa checkpoint (metadata format '\(f.metadata["format"] ?? "none")', expected '\(format)')")
        }
        guard let json = f.metadata["recipe"]?.data(using: .utf8) else {
            throw AFAError.invalidInput("\(path): checkpoint has no 'recipe' metadata")
        }
        let recipe = try TrainRecipe.decode(json: json, source: "\(path): the checkpoint's recipe")
        // The recipe decides what gets allocated: refuse a model larger than the file could fill.
        guard let needed = recipe.model.stateDictValueCount else {
            do { try recipe.model.validate() } catch { throw AFAError.invalidInput("\(path): checkpoint recipe: \(error)") }
            throw AFAError.invalidInput("\(path): checkpoint recipe describes a model too large to count")
        }
        let held = f.entries.values.reduce(0) { $0 &+ $1.count }
        guard needed <= held else {
            throw AFAError.invalidInput("\(path): checkpoint recipe describes a model of \(needed) values, but the file holds only \(held)")
        }
        var names: [String]?
        if let text = f.metadata["class_names"] {
            guard let decoded = try? JSONDecoder().decode([String].self, from: Data(text.utf8)) else {
                throw AFAError.invalidInput("\(path): checkpoint 'class_names' metadata is not a JSON list of strings")
            }
            guard decoded.count == recipe.model.numClasses else {
                throw AFAError.invalidInput("\(path): checkpoint names \(decoded.count) classes, its recipe has \(recipe.model.numClasses)")
            }
            names = decoded
        }
        let it = f.contains("trainer.iteration") ? try f.integers("trainer.iteration")[0] : 0
        return Checkpoint(file: f, recipe: recipe, classNames: names, iteration: it)
    }

    /// Encodes a checkpoint of the current state.
    /// `streams` are the dropout / drop-path streams of the data-parallel shards (one for a plain run).
    public static func encode(model: AFAModel, optimizer: PolyWarmupAdamW, streams: [RNG], recipe: TrainRecipe, classNames: [String],
                              iteration: Int) throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        var w = SafeTensorsWriter(metadata: [
            "format": format,
            "recipe": String(decoding: try enc.encode(recipe), as: UTF8.self),
            "class_names": String(decoding: try enc.encode(classNames), as: UTF8.self),
            "producer": "afa \(AFAInfo.version)",
        ])
        model.saveStateDict(into: &w)
        optimizer.save(into: &w)
        w.addInt64("trainer.iteration", shape: [], [Int64(iteration)])
        let words = streams.flatMap { $0.stateWords.map { Int64(bitPattern: $0) } }
        w.addInt64("trainer.rng", shape: streams.count == 1 ? [4] : [streams.count, 4], words)
        return try w.encoded()
    }

    /// A checkpoint of a single-process run (one random stream).
    public static func encode(model: AFAModel, optimizer: PolyWarmupAdamW, rng: RNG, recipe: TrainRecipe, classNames: [String],
                              iteration: Int) throws -> Data {
        try encode(model: model, optimizer: optimizer, streams: [rng], recipe: recipe, classNames: classNames, iteration: iteration)
    }

    /// Restores model and optimiser; returns the training random streams (one per data-parallel
    /// shard) when the file has them.
    public func restore(model: AFAModel, optimizer: PolyWarmupAdamW) throws -> [RNG]? {
        try model.loadStateDict(file, ignorePrefixes: Self.nonModelPrefixes)
        try optimizer.load(from: file)
        if file.contains("trainer.rng") {
            let e = try file.entry("trainer.rng")
            let shards = recipe.shards ?? 1
            let expected = shards == 1 ? [4] : [shards, 4]
            guard e.shape == expected, e.dtype == .i64 else {
                throw StateDictError(source: file.path, misshaped: [("trainer.rng", e.shape, expected)])
            }
            let words = try file.integers("trainer.rng").map { UInt64(bitPattern: Int64($0)) }
            return (0..<shards).map { RNG(stateWords: Array(words[($0 * 4)..<($0 * 4 + 4)])) }
        }
        return nil
    }
}
