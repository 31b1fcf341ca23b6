// SIMD versions of exp and erf: the libm functions are scalar, and GELU/softmax/sigmoid sit on hot
// paths. Both are accurate to a few float ulps over the range that matters (tests check them against
// Foundation's Double exp/erf).

public typealias Vec = SIMD16<Float>
public let vecWidth = 16

@inline(__always) public func load(_ p: UnsafePointer<Float>) -> Vec {
    UnsafeRawPointer(p).loadUnaligned(as: Vec.self)
}

@inline(__always) public func store(_ v: Vec, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vec.self)
}

/// Largest lane and sum of the lanes, by halving (the standard library's `max()` and `sum()` on SIMD
/// types go through memory lane by lane). The sum adds the two halves, then their halves, in a fixed order.
@inline(__always) public func vmax(_ v: Vec) -> Float {
    let a = v.lowHalf.replacing(with: v.highHalf, where: v.highHalf .> v.lowHalf)
    let b = a.lowHalf.replacing(with: a.highHalf, where: a.highHalf .> a.lowHalf)      // 4 lanes
    return Swift.max(Swift.max(b[0], b[1]), Swift.max(b[2], b[3]))
}

@inline(__always) public func vsum(_ v: Vec) -> Float {
    let a = v.lowHalf + v.highHalf
    let b = a.lowHalf + a.highHalf                                                      // 4 lanes
    return (b[0] + b[2]) + (b[1] + b[3])
}

/// Lane-wise clamp through vector compares and selects (the generic `clamped` / `pointwiseMin` are
/// lane-by-lane loops in the standard library).
@inline(__always) public func vclamp(_ x: Vec, _ lo: Float, _ hi: Float) -> Vec {
    let a = x.replacing(with: hi, where: x .> Vec(repeating: hi))
    return a.replacing(with: lo, where: a .< Vec(repeating: lo))
}

/// e^x per lane: range reduction x = n·ln2 + r, degree-6 polynomial for e^r (Cephes expf), 2^n by
/// building the exponent bits. Inputs are clamped to the finite range (e^-87.3 … e^88.3).
///
/// `@_transparent` (always inlined, also where the optimiser's size limits would refuse): out of line, a
/// SIMD16 argument and result pass through four 128-bit registers each and the caller's loop spills.
@_transparent public func vexp(_ x0: Vec) -> Vec {
    let x = vclamp(x0, -87.33654, 88.3762626647949)
    // Round to nearest by adding 1.5·2²³: the sum's low mantissa bits hold n (the generic SIMD
    // rounding and Int32 conversions are not lowered to vector instructions).
    let magic = Vec(repeating: 12582912)
    let t = x * 1.44269504088896341 + magic
    let n = t - magic
    var r = x - n * 0.693359375
    r = r - n * -2.12194440e-4
    var p = Vec(repeating: 1.9875691500E-4)
    p = p * r + 1.3981999507E-3
    p = p * r + 8.3334519073E-3
    p = p * r + 4.1665795894E-2
    p = p * r + 1.6666665459E-1
    p = p * r + 5.0000001201E-1
    p = p * r * r + r + 1
    // n in [-126, 127]: 2^n is exact as (n + 127) << 23; n sits in the low bits of t's pattern.
    let bits = (unsafeBitCast(t, to: SIMD16<UInt32>.self) &- 0x4B40_0000 &+ 127) &<< 23
    return p * unsafeBitCast(bits, to: Vec.self)
}

/// erf per lane: odd rational approximation erf(x) = x·P(x²)/Q(x²) on [-4, 4] (clamped beyond,
/// where erf is ±1 in float). `@_transparent` for the same reason as `vexp`.
@_transparent public func verf(_ x0: Vec) -> Vec {
    let x = vclamp(x0, -4, 4)
    let x2 = x * x
    var p = Vec(repeating: -2.72614225801306e-10)
    p = p * x2 + 2.77068142495902e-08
    p = p * x2 + -2.10102402082508e-06
    p = p * x2 + -5.69250639462346e-05
    p = p * x2 + -7.34990630326855e-04
    p = p * x2 + -2.95459980854025e-03
    p = p * x2 + -1.60960333262415e-02
    p = p * x
    var q = Vec(repeating: -1.45660718464996e-05)
    q = q * x2 + -2.13374055278905e-04
    q = q * x2 + -1.68282697438203e-03
    q = q * x2 + -7.37332916720468e-03
    q = q * x2 + -1.42647390514189e-02
    return p / q
}

/// Scalar wrappers (for tails and for code that works one value at a time).
@inline(__always) public func sexp(_ x: Float) -> Float { vexp(Vec(repeating: x))[0] }
@inline(__always) public func serf(_ x: Float) -> Float { verf(Vec(repeating: x))[0] }
