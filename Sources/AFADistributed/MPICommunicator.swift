import AFA
import CMPI
import Foundation

/// An Open MPI call that failed, with MPI's own message.
public struct MPIError: Error, CustomStringConvertible {
    public let description: String
}

/// `MPI_COMM_WORLD` as the `Communicator` of data-parallel training.
///
/// One per process, made on the thread that calls the collectives (MPI is initialised with
/// `MPI_THREAD_FUNNELED`: worker threads compute, only that thread talks to MPI). Errors come back
/// as thrown `MPIError`s instead of MPI's default abort, so the caller can say which rank failed
/// before it ends the job with `abort`.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    private let comm: MPI_Comm

    public init() throws {
        var provided: Int32 = 0
        var rc = MPI_Init_thread(nil, nil, afa_mpi_thread_funneled(), &provided)
        guard rc == afa_mpi_success() else { throw MPIError(description: "MPI_Init_thread failed (\(Self.message(rc)))") }
        comm = afa_mpi_comm_world()
        rc = MPI_Comm_set_errhandler(comm, afa_mpi_errors_return())
        var r: Int32 = 0, n: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &n)
        rank = Int(r); size = Int(n)
        guard provided >= afa_mpi_thread_funneled() else {
            throw MPIError(description: "this MPI offers thread level \(provided); training needs MPI_THREAD_FUNNELED")
        }
    }

    /// Ranks that share this machine (Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE; 1 when unknown).
    public var localRanks: Int { Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1 }

    /// The default worker threads of a rank: this machine's cores shared by the ranks on it, so
    /// `mpirun -np 2` on 2 cores runs 2 × 1 threads, not 2 × 2.
    public var threadsPerRank: Int { max(1, ProcessInfo.processInfo.activeProcessorCount / max(localRanks, 1)) }

    /// Shuts MPI down at the end of a successful run (every rank calls it).
    public func finalize() { MPI_Finalize() }

    /// Ends every rank of the job (mpirun stops with a non-zero status).
    public func abort(code: Int32) -> Never {
        MPI_Abort(comm, code)
        exit(code)
    }

    static func message(_ rc: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: Int(afa_mpi_max_error_string()) + 1)
        var length: Int32 = 0
        MPI_Error_string(rc, &buffer, &length)
        return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func check(_ rc: Int32, _ call: String) throws {
        guard rc == afa_mpi_success() else { throw MPIError(description: "\(call) failed on rank \(rank) of \(size): \(Self.message(rc))") }
    }

    /// MPI counts are 32-bit: large buffers go in pieces.
    private static let piece = Int(Int32.max)

    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try allreduceSum(UnsafeMutableRawPointer(buffer), count: count, stride: MemoryLayout<Float>.stride, type: afa_mpi_float())
    }

    public func allreduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) throws {
        try allreduceSum(UnsafeMutableRawPointer(buffer), count: count, stride: MemoryLayout<Double>.stride, type: afa_mpi_double())
    }

    private func allreduceSum(_ buffer: UnsafeMutableRawPointer, count: Int, stride: Int, type: MPI_Datatype) throws {
        var done = 0
        while done < count {
            let n = min(count - done, Self.piece)
            try check(MPI_Allreduce(afa_mpi_in_place(), buffer + done * stride, Int32(n), type, afa_mpi_sum(), comm), "MPI_Allreduce")
            done += n
        }
    }

    public func allgather(_ values: [UInt64]) throws -> [UInt64] {
        var out = [UInt64](repeating: 0, count: values.count * size)
        var send = values
        try check(MPI_Allgather(&send, Int32(values.count), afa_mpi_uint64(), &out, Int32(values.count), afa_mpi_uint64(), comm), "MPI_Allgather")
        return out
    }

    public func broadcast(_ data: Data) throws -> Data {
        var length = UInt64(data.count)
        try check(MPI_Bcast(&length, 1, afa_mpi_uint64(), 0, comm), "MPI_Bcast")
        var bytes = rank == 0 ? data : Data(count: Int(length))
        try bytes.withUnsafeMutableBytes { raw in
            var done = 0
            while done < Int(length) {
                let n = min(Int(length) - done, Self.piece)
                try check(MPI_Bcast(raw.baseAddress! + done, Int32(n), afa_mpi_byte(), 0, comm), "MPI_Bcast")
                done += n
            }
        }
        return bytes
    }
}
