import Foundation
import Layers
import SafeTensors
import TensorCore

/// A state dict that does not fit the model. Lists every problem at once.
public struct StateDictError: Error, CustomStringConvertible, LocalizedError {
    public var source: String
    public var missing: [String] = []
    public var unexpected: [String] = []
    /// (key, found shape, expected shape)
    public var misshaped: [(String, [Int], [Int])] = []

    public var isEmpty: Bool { missing.isEmpty && unexpected.isEmpty && misshaped.isEmpty }

    public var description: String {
        var lines = ["\(source): state dict does not match the model"]
        if !missing.isEmpty { lines.append("  missing keys (\(missing.count)): \(missing.joined(separator: ", "))") }
        if !unexpected.isEmpty { lines.append("  unexpected keys (\(unexpected.count)): \(unexpected.joined(separator: ", "))") }
        for (k, f, e) in misshaped { lines.append("  wrong shape for \(k): found \(f), expected \(e)") }
        return lines.joined(separator: "\n")
    }

    public var errorDescription: String? { description }
}

extension AFAModel {
    /// Every state-dict entry: (key, shape). Parameters, BatchNorm buffers and `num_batches_tracked`.
    public var stateDictShapes: [(String, [Int])] {
        parameters.map { ($0.name, $0.shape) } + buffers.map { ($0.name, $0.value.shape) } + counters.map { ($0.name, []) }
    }

    /// Writes the state dict (original key names) into `writer`, optionally under a key prefix.
    public func saveStateDict(into writer: inout SafeTensorsWriter, prefix: String = "") {
        for p in parameters { writer.add(prefix + p.name, p.value) }
        for b in buffers { writer.add(prefix + b.name, b.value) }
        for c in counters { writer.addInt64(prefix + c.name, shape: [], [c.value]) }
    }

    /// Loads a state dict. A `module.` prefix (DDP checkpoints) is stripped; keys that start with
    /// `ignorePrefixes` after that are skipped. With `strict`, missing, unexpected and mis-shaped keys
    /// are all reported in one `StateDictError`; without it, only shape mismatches are errors.
    public func loadStateDict(_ file: SafeTensorsFile, keyPrefix: String = "", strict: Bool = true,
                              ignorePrefixes: [String] = []) throws {
        var available: [String: String] = [:]   // model key → file key
        var err = StateDictError(source: file.path)
        for name in file.names {
            var k = name
            if !keyPrefix.isEmpty {
                guard k.hasPrefix(keyPrefix) else { continue }
                k.removeFirst(keyPrefix.count)
            }
            if k.hasPrefix("module.") { k.removeFirst("module.".count) }
            if ignorePrefixes.contains(where: { k.hasPrefix($0) }) { continue }
            available[k] = name
        }
        // The module tree is walked once (reflection is most of the cost of checking a small file).
        let (parameters, buffers, counters) = (self.parameters, self.buffers, self.counters)
        let shapes = parameters.map { ($0.name, $0.shape) } + buffers.map { ($0.name, $0.value.shape) } + counters.map { ($0.name, [Int]()) }
        let expected = Dictionary(shapes, uniquingKeysWith: { a, _ in a })
        for (k, shape) in shapes {
            guard let fk = available[k] else { err.missing.append(k); continue }
            let found = try file.entry(fk).shape
            if found != shape { err.misshaped.append((k, found, shape)) }
        }
        err.unexpected = available.keys.filter { expected[$0] == nil }.sorted()
        if !strict { err.missing = []; err.unexpected = [] }
        guard err.isEmpty else { throw err }
        for p in parameters { if let fk = available[p.name] { try p.value.assign(from: try file.tensor(fk)) } }
        for b in buffers { if let fk = available[b.name] { try b.value.assign(from: try file.tensor(fk)) } }
        for c in counters { if let fk = available[c.name] { c.value = Int64(try file.integers(fk)[0]) } }
    }

    /// Initialises the encoder from ImageNet-pretrained MiT weights: the `encoder.` keys without that
    /// prefix, plus a classification `head.*` that is ignored. Every encoder key must be present.
    public func loadPretrainedEncoder(_ file: SafeTensorsFile) throws {
        var err = StateDictError(source: file.path)
        let encoderParams = encoder.parameters
        var byName: [String: String] = [:]
        for name in file.names {
            var k = name
            if k.hasPrefix("module.") { k.removeFirst("module.".count) }
            if k.hasPrefix("head.") { continue }
            byName["encoder." + k] = name
        }
        let wanted = Set(encoderParams.map(\.name))
        for p in encoderParams {
            guard let fk = byName[p.name] else { err.missing.append(p.name); continue }
            let found = try file.entry(fk).shape
            if found != p.shape { err.misshaped.append((p.name, found, p.shape)) }
        }
        err.unexpected = byName.keys.filter { !wanted.contains($0) }.map { String($0.dropFirst("encoder.".count)) }.sorted()
        guard err.isEmpty else { throw err }
        for p in encoderParams { try p.value.assign(from: try file.tensor(byName[p.name]!)) }
    }
}
