import CBLASShim
import Foundation

/// Whether a GEMM operand is used as stored or transposed.
/// OpenBLAS is put in single-threaded mode once, before the first product, even when the host app
/// never calls `Runtime.setThreads` (the Swift workers do the threading).
let singleThreadedBLAS: Void = { openblas_set_num_threads(1) }()

public enum Transpose: Sendable {
    case none, transposed

    var cblas: CBLAS_TRANSPOSE { self == .none ? CblasNoTrans : CblasTrans }
}

/// C = alpha · op(A) · op(B) + beta · C, row-major, through `cblas_sgemm`.
///
/// op(A) is m×k and op(B) is k×n; `lda`, `ldb`, `ldc` are the row strides of A, B, C as stored
/// (so for `transA == .none` A is m×lda, otherwise k×lda).
@inline(__always)
public func sgemm(_ transA: Transpose, _ transB: Transpose, m: Int, n: Int, k: Int,
                  alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                  b: UnsafePointer<Float>, ldb: Int,
                  beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    precondition(lda >= max(1, transA == .none ? k : m), "sgemm: lda \(lda) too small")
    precondition(ldb >= max(1, transB == .none ? n : k), "sgemm: ldb \(ldb) too small")
    precondition(ldc >= max(1, n), "sgemm: ldc \(ldc) too small")
    if m == 0 || n == 0 { return }
    if k == 0 {
        // BLAS leaves C untouched for k = 0 only when beta = 1; make the semantics explicit.
        for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : c[i * ldc + j] * beta } }
        return
    }
    // OpenBLAS runs single-threaded (see Runtime.setThreads); large products are split into row
    // (or column) blocks over the Swift workers, one single-threaded GEMM per core. Each element of C
    // is computed by the same kernel whatever the split. Every part packs the whole of the operand it
    // does not split (B for row blocks, A for column blocks), so the split is along the side whose
    // other operand is the smaller: rows when n ≤ m. A weight gradient dyᵀ·x (m = 64 outputs, n = 256
    // inputs, k = 12,800 tokens) split by rows packed all of x twice.
    _ = singleThreadedBLAS
    let workers = Parallel.workers
    let flops = 2 * Double(m) * Double(n) * Double(k)
    if workers > 1 && flops >= 4e6 && !Parallel.isInsideParallelRegion {
        let parts = workers
        if m >= 16 * parts && (n <= m || n < 16 * parts) {
            let rows = (m + parts - 1) / parts
            Parallel.forEach(parts) { p in
                let r0 = p * rows, r1 = min(m, r0 + rows)
                guard r0 < r1 else { return }
                let ap = transA == .none ? a + r0 * lda : a + r0
                cblas_sgemm(CblasRowMajor, transA.cblas, transB.cblas, Int32(r1 - r0), Int32(n), Int32(k),
                            alpha, ap, Int32(lda), b, Int32(ldb), beta, c + r0 * ldc, Int32(ldc))
            }
            return
        }
        if n >= 16 * parts {
            let cols = (n + parts - 1) / parts
            Parallel.forEach(parts) { p in
                let c0 = p * cols, c1 = min(n, c0 + cols)
                guard c0 < c1 else { return }
                let bp = transB == .none ? b + c0 : b + c0 * ldb
                cblas_sgemm(CblasRowMajor, transA.cblas, transB.cblas, Int32(m), Int32(c1 - c0), Int32(k),
                            alpha, a, Int32(lda), bp, Int32(ldb), beta, c + c0, Int32(ldc))
            }
            return
        }
    }
    cblas_sgemm(CblasRowMajor, transA.cblas, transB.cblas, Int32(m), Int32(n), Int32(k),
                alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// A batch of equally shaped GEMMs whose operands sit at fixed strides (per-head attention).
///
/// Small GEMMs do not scale across OpenBLAS threads, so when there are at least as many problems as
/// workers each product runs single-threaded on its worker; otherwise they run one after the other,
/// each split over the workers by `sgemm`.
public func sgemmStridedBatched(_ transA: Transpose, _ transB: Transpose, m: Int, n: Int, k: Int,
                                alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, strideA: Int,
                                b: UnsafePointer<Float>, ldb: Int, strideB: Int,
                                beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int, strideC: Int,
                                batch: Int) {
    if batch <= 0 { return }
    let workers = Parallel.workers
    if batch >= workers && workers > 1 {
        Parallel.forEach(batch) { i in
            sgemm(transA, transB, m: m, n: n, k: k, alpha: alpha, a: a + i * strideA, lda: lda,
                  b: b + i * strideB, ldb: ldb, beta: beta, c: c + i * strideC, ldc: ldc)
        }
    } else {
        for i in 0..<batch {
            sgemm(transA, transB, m: m, n: n, k: k, alpha: alpha, a: a + i * strideA, lda: lda,
                  b: b + i * strideB, ldb: ldb, beta: beta, c: c + i * strideC, ldc: ldc)
        }
    }
}

extension Tensor {
    /// The 2-D matrix product op(self) · op(other) of two rank-2 tensors.
    public func matmul(_ other: Tensor, transposeSelf: Bool = false, transposeOther: Bool = false) throws -> Tensor {
        guard rank == 2, other.rank == 2 else {
            throw TensorError.shapeMismatch(operation: "matmul (rank 2 expected)", lhs: shape, rhs: other.shape)
        }
        let m = transposeSelf ? shape[1] : shape[0]
        let k = transposeSelf ? shape[0] : shape[1]
        let k2 = transposeOther ? other.shape[1] : other.shape[0]
        let n = transposeOther ? other.shape[0] : other.shape[1]
        guard k == k2 else {
            throw TensorError.shapeMismatch(operation: "matmul", lhs: shape, rhs: other.shape)
        }
        let out = Tensor(zeros: [m, n])
        sgemm(transposeSelf ? .transposed : .none, transposeOther ? .transposed : .none, m: m, n: n, k: k,
              a: data, lda: shape[1], b: other.data, ldb: other.shape[1], c: out.data, ldc: n)
        return out
    }

    /// Batched matrix product of rank-3 tensors: out[i] = op(self[i]) · op(other[i]).
    public func batchedMatmul(_ other: Tensor, transposeSelf: Bool = false, transposeOther: Bool = false) throws -> Tensor {
        guard rank == 3, other.rank == 3, shape[0] == other.shape[0] else {
            throw TensorError.shapeMismatch(operation: "batchedMatmul (rank 3, same batch)", lhs: shape, rhs: other.shape)
        }
        let m = transposeSelf ? shape[2] : shape[1]
        let k = transposeSelf ? shape[1] : shape[2]
        let k2 = transposeOther ? other.shape[2] : other.shape[1]
        let n = transposeOther ? other.shape[1] : other.shape[2]
        guard k == k2 else {
            throw TensorError.shapeMismatch(operation: "batchedMatmul", lhs: shape, rhs: other.shape)
        }
        let out = Tensor(zeros: [shape[0], m, n])
        sgemmStridedBatched(transposeSelf ? .transposed : .none, transposeOther ? .transposed : .none,
                            m: m, n: n, k: k, a: data, lda: shape[2], strideA: shape[1] * shape[2],
                            b: other.data, ldb: other.shape[2], strideB: other.shape[1] * other.shape[2],
                            c: out.data, ldc: n, strideC: m * n, batch: shape[0])
        return out
    }
}

/// Runs `count` independent GEMM tasks (e.g. one per image and head). With at least as many tasks as
/// workers each task runs on its own worker (its products serially); otherwise the tasks run in order,
/// each product split over the workers by `sgemm`. Threads never nest.
public func forEachGEMMTask(_ count: Int, _ body: (Int) -> Void) {
    let workers = Parallel.workers
    if count >= workers && workers > 1 {
        Parallel.forEach(count, body)   // products inside run serially on their worker
    } else {
        for i in 0..<count { body(i) }
    }
}
