import Foundation

/// A seedable pseudo-random generator (xoshiro256**, seeded through SplitMix64).
///
/// Same seed ⇒ same stream on every platform. The full state can be saved and restored (checkpoints
/// carry it so a resumed run draws the same numbers as an uninterrupted one).
public struct RNG: RandomNumberGenerator, Sendable, Equatable {
    public private(set) var state: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var sm = seed
        func splitmix() -> UInt64 {
            sm &+= 0x9E37_79B9_7F4A_7C15
            var z = sm
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    /// Restores a saved state (as returned by `stateWords`).
    public init(stateWords w: [UInt64]) {
        precondition(w.count == 4, "RNG state has 4 words")
        state = (w[0], w[1], w[2], w[3])
    }

    public var stateWords: [UInt64] { [state.0, state.1, state.2, state.3] }

    public static func == (a: RNG, b: RNG) -> Bool { a.stateWords == b.stateWords }

    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = rotl(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = rotl(state.3, 45)
        return result
    }

    @inline(__always) private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func uniformDouble() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Uniform in [lo, hi).
    public mutating func uniform(_ lo: Float = 0, _ hi: Float = 1) -> Float {
        let u = Float(uniformDouble())
        // Float rounding can reach 1.0; keep the interval half-open.
        let v = lo + (hi - lo) * u
        return v < hi ? v : lo
    }

    /// Standard normal (Box–Muller in Double).
    public mutating func normal(mean: Double = 0, std: Double = 1) -> Double {
        var u1 = uniformDouble()
        while u1 <= 0 { u1 = uniformDouble() }
        let u2 = uniformDouble()
        return mean + std * (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// Normal restricted to [a, b] (absolute bounds) by rejection.
    public mutating func truncatedNormal(mean: Double = 0, std: Double = 1, a: Double = -2, b: Double = 2) -> Double {
        precondition(a < b, "truncatedNormal needs a < b")
        for _ in 0..<10_000 {
            let v = normal(mean: mean, std: std)
            if v >= a && v <= b { return v }
        }
        return min(max(mean, a), b)
    }

    /// True with probability p.
    public mutating func bernoulli(_ p: Double) -> Bool { uniformDouble() < p }

    /// Uniform integer in 0..<n.
    public mutating func int(below n: Int) -> Int {
        precondition(n > 0)
        return Int(next(upperBound: UInt64(n)))
    }
}

extension Tensor {
    /// Fills with uniform values in [lo, hi).
    public func fillUniform(_ lo: Float, _ hi: Float, rng: inout RNG) {
        for i in 0..<count { data[i] = rng.uniform(lo, hi) }
    }

    /// Fills with normal values.
    public func fillNormal(mean: Float = 0, std: Float, rng: inout RNG) {
        for i in 0..<count { data[i] = Float(rng.normal(mean: Double(mean), std: Double(std))) }
    }

    /// Fills with a normal truncated to [a, b] (absolute bounds, as PyTorch's trunc_normal_).
    public func fillTruncatedNormal(mean: Float = 0, std: Float, a: Float = -2, b: Float = 2, rng: inout RNG) {
        for i in 0..<count {
            data[i] = Float(rng.truncatedNormal(mean: Double(mean), std: Double(std), a: Double(a), b: Double(b)))
        }
    }
}
