import AFA
import FuzzDriver
import Foundation

/// Checkpoint loading as a server does it: format and recipe from the metadata, the model built from
/// the recipe, the state dict checked key by key and shape by shape.
fuzzMain { data in
    _ = try? Segmenter(checkpointData: data, name: "fuzz")
}
