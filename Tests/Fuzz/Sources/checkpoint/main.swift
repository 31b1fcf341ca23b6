import AFA
import FuzzDriver
import Foundation

/// Checkpoint loading as a server does it: container and checksum, format and recipe from the metadata,
/// the model the recipe describes, the state dict checked key by key and shape by shape, then a
/// `Segmenter` over it. Models are kept per configuration (building one is most of the cost of a
/// valid input, and the same configuration comes back in almost every mutation); a new configuration
/// from the fuzzer still gets its model built.
nonisolated(unsafe) var models: [(ModelConfig, AFAModel)] = []

fuzzMain { data in
    guard let ck = try? Checkpoint.open(data: data, name: "fuzz") else { return }
    let model: AFAModel
    if let m = models.first(where: { $0.0 == ck.recipe.model })?.1 {
        model = m
    } else {
        guard let m = try? AFAModel(config: ck.recipe.model) else { return }
        if models.count >= 8 { models.removeFirst() }
        models.append((ck.recipe.model, m))
        model = m
    }
    guard (try? model.loadStateDict(ck.file, ignorePrefixes: ["optimizer.", "trainer."])) != nil else { return }
    let names = ck.classNames ?? (0..<ck.recipe.model.numClasses).map { "class\($0)" }
    precondition(names.count == ck.recipe.model.numClasses, "class names must match the classes")
    _ = Segmenter(model: model, recipe: ck.recipe, classNames: names)
}
