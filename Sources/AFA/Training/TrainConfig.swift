import Foundation

/// The method's hyper-parameters for one training iteration and the optimiser: CAM scales, label
/// thresholds, PAR, random walk, phase iterations, loss weights and AdamW with its schedule.
/// Codable with the reference's snake_case keys; every field has the paper's default.
public struct TrainConfig: Codable, Equatable, Sendable {
    public var scales: [Double] = [1.0, 0.5, 1.5]
    /// Kept for completeness: once the (low, high] band is ignored it has no effect.
    public var bkgScore: Float = 0.45
    public var highThre: Float = 0.55
    public var lowThre: Float = 0.35
    public var ignoreIndex: Int = 255
    /// Window of the random walk and of the affinity labels, in stage-4 cells.
    public var radius: Int = 8
    /// How the affinity labels sample the refined pseudo label on the stage-4 grid (the method: nearest;
    /// the tiny recipe: majority).
    public var affLabelSampling: AffinityLabelSampling = .nearest
    public var parDilations: [Int] = [1, 2, 4, 8, 12, 24]
    public var parIters: Int = 10
    public var parW1: Float = 0.3
    public var parW2: Float = 0.01
    /// PAR runs at 1/downScale of the input.
    public var downScale: Int = 2
    /// Column normalisation of the random walk: A / (column sum + eps).
    public var rwNormEps: Float = 0.1
    /// Iterations n ≤ camIters train the classifier only.
    public var camIters: Int = 2000
    /// Iterations n > affLabelIter use the refined affinity label as seg target.
    public var affLabelIter: Int = 6000
    public var segWeight: Float = 0.1
    public var affWeight: Float = 0.1
    public var lr: Double = 6e-5
    public var weightDecay: Double = 0.01
    public var betas: [Double] = [0.9, 0.999]
    public var adamEps: Double = 1e-8
    public var warmupIters: Int = 1500
    public var warmupRatio: Double = 1e-6
    public var maxIters: Int = 20000
    public var power: Double = 1.0

    public init() {}

    enum CodingKeys: String, CodingKey {
        case scales, radius, lr, betas, power
        case bkgScore = "bkg_score", highThre = "high_thre", lowThre = "low_thre", ignoreIndex = "ignore_index"
        case parDilations = "par_dilations", parIters = "par_iters", parW1 = "par_w1", parW2 = "par_w2"
        case downScale = "down_scale", rwNormEps = "rw_norm_eps", camIters = "cam_iters", affLabelIter = "aff_label_iter"
        case segWeight = "seg_weight", affWeight = "aff_weight", weightDecay = "weight_decay", adamEps = "adam_eps"
        case warmupIters = "warmup_iters", warmupRatio = "warmup_ratio", maxIters = "max_iters"
        case affLabelSampling = "aff_label_sampling"
    }

    /// Decodes a partial object: absent keys keep their defaults.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func get<T: Decodable>(_ k: CodingKeys, _ d: T) throws -> T { try c.decodeIfPresent(T.self, forKey: k) ?? d }
        let d = TrainConfig()
        scales = try get(.scales, d.scales); bkgScore = try get(.bkgScore, d.bkgScore)
        highThre = try get(.highThre, d.highThre); lowThre = try get(.lowThre, d.lowThre)
        ignoreIndex = try get(.ignoreIndex, d.ignoreIndex); radius = try get(.radius, d.radius)
        affLabelSampling = try get(.affLabelSampling, d.affLabelSampling)
        parDilations = try get(.parDilations, d.parDilations); parIters = try get(.parIters, d.parIters)
        parW1 = try get(.parW1, d.parW1); parW2 = try get(.parW2, d.parW2); downScale = try get(.downScale, d.downScale)
        rwNormEps = try get(.rwNormEps, d.rwNormEps); camIters = try get(.camIters, d.camIters)
        affLabelIter = try get(.affLabelIter, d.affLabelIter); segWeight = try get(.segWeight, d.segWeight)
        affWeight = try get(.affWeight, d.affWeight); lr = try get(.lr, d.lr); weightDecay = try get(.weightDecay, d.weightDecay)
        betas = try get(.betas, d.betas); adamEps = try get(.adamEps, d.adamEps); warmupIters = try get(.warmupIters, d.warmupIters)
        warmupRatio = try get(.warmupRatio, d.warmupRatio); maxIters = try get(.maxIters, d.maxIters); power = try get(.power, d.power)
    }

    /// Checks ranges that would otherwise fail deep inside an iteration.
    public func validate() throws {
        guard !scales.isEmpty, scales.allSatisfy({ $0 > 0 }) else { throw ConfigError.invalid("scales must be positive, got \(scales)") }
        guard lowThre <= highThre else { throw ConfigError.invalid("low_thre \(lowThre) must not exceed high_thre \(highThre)") }
        guard (0...255).contains(ignoreIndex) else { throw ConfigError.invalid("ignore_index must be in 0...255") }
        guard radius >= 0, parIters >= 0, downScale >= 1 else { throw ConfigError.invalid("radius, par_iters must be ≥ 0 and down_scale ≥ 1") }
        guard !parDilations.isEmpty, parDilations.allSatisfy({ $0 > 0 }) else { throw ConfigError.invalid("par_dilations must be positive") }
        guard betas.count == 2, betas.allSatisfy({ (0..<1).contains($0) }) else { throw ConfigError.invalid("betas needs two values in [0, 1)") }
        guard lr >= 0, weightDecay >= 0, adamEps > 0, maxIters > 0, warmupIters >= 0 else {
            throw ConfigError.invalid("lr, weight_decay, adam_eps, max_iters and warmup_iters must be non-negative (eps, max_iters positive)")
        }
    }
}
