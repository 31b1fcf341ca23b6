import AFA
import FuzzDriver
import Foundation

/// The safetensors reader: header parsing and validation, then every tensor read back in its dtype.
fuzzMain { data in
    guard let file = try? SafeTensorsFile(data: data, path: "fuzz") else { return }
    for name in file.names {
        _ = try? file.tensor(name)
        _ = try? file.integers(name)
        _ = try? file.doubles(name)
    }
}
