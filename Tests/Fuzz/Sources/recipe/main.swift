import AFA
import FuzzDriver
import Foundation

/// The recipe JSON (`config.json`, `--config`, checkpoint metadata): decoding and validation.
fuzzMain { data in
    guard let recipe = try? JSONDecoder().decode(TrainRecipe.self, from: data) else { return }
    _ = try? recipe.model.validate()
    _ = try? recipe.train.validate()
}
