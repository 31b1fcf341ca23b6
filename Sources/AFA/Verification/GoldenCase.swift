import Foundation
import SafeTensors
import TensorCore

/// A case file in the golden format (`afa-golden-v1`): weights under their state-dict keys, the
/// inputs `input.*`, and a JSON `config` in the metadata with `model`, `train`, `n_iter`, `seg_target`
/// (full iterations) or `unit` (unit files).
public struct GoldenCase {
    public let file: SafeTensorsFile
    /// The metadata `config` object.
    public let config: [String: Any]

    public init(path: String) throws {
        file = try SafeTensorsFile(path: path)
        guard let text = file.metadata["config"], let data = text.data(using: .utf8),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw AFAError.invalidInput("\(path): metadata has no JSON 'config' object (not a golden-format case file)")
        }
        config = obj
    }

    public var path: String { file.path }

    /// The unit name for unit files (`PAR`, `random-walk propagation`, `PolyWarmupAdamW`), nil for a full case.
    public var unit: String? { config["unit"] as? String }

    /// Decodes a sub-object of the config as `T`.
    public func decode<T: Decodable>(_ type: T.Type, key: String) throws -> T {
        guard let sub = config[key] else { throw AFAError.invalidInput("\(path): config has no '\(key)'") }
        let data = try JSONSerialization.data(withJSONObject: sub)
        do { return try JSONDecoder().decode(T.self, from: data) } catch {
            throw AFAError.invalidInput("\(path): config '\(key)' does not decode: \(error)")
        }
    }

    public func int(_ key: String) throws -> Int {
        guard let v = config[key] as? Int else { throw AFAError.invalidInput("\(path): config has no integer '\(key)'") }
        return v
    }

    public func string(_ key: String) -> String? { config[key] as? String }

    public func tensor(_ key: String) throws -> Tensor { try file.tensor(key) }

    public func int32s(_ key: String) throws -> [Int32] { try file.integers(key).map { Int32($0) } }
}
