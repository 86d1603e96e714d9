import Crypto
// Helpers shared by the test targets: temporary directories, child processes, the reference
// Python implementation, and seeded random tensors. Not part of any product.
public import Foundation
public import Graft
public import SafeTensors

/// A fresh directory under the system temp folder, removed when released.
public final class TemporaryDirectory: Sendable {
    public let path: String

    public init() {
        HangGuard.arm()
        let template = NSTemporaryDirectory() + "graft-test-XXXXXX"
        var bytes = Array(template.utf8CString)
        guard let made = mkdtemp(&bytes) else { fatalError("mkdtemp failed: \(errno)") }
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// `path/name`.
    public func file(_ name: String) -> String { path + "/" + name }
}

/// What a finished child process printed.
public struct ProcessOutput: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

/// Runs `executable` to completion and returns its exit status (128 + the signal when one
/// killed it) and output.
public func runProcess(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil, directory: String? = nil,
    input: Data? = nil
) throws -> ProcessOutput {
    // A child that exits before reading all its input must not take the test process with it.
    signal(SIGPIPE, SIG_IGN)
    let child = try ChildProcess(
        executable, arguments, environment: environment, directory: directory, stdin: .pipe, stdout: .pipe, stderr: .pipe)
    if let input { try? child.input?.write(contentsOf: input) }
    try child.input?.close()
    // Read both pipes before waiting so a chatty child cannot block on a full pipe.
    let group = DispatchGroup()
    let collected = Collected()
    group.enter()
    DispatchQueue.global().async {
        collected.setErr(child.error?.readDataToEndOfFile() ?? Data())
        group.leave()
    }
    let stdout = child.output?.readDataToEndOfFile() ?? Data()
    group.wait()
    return ProcessOutput(
        status: child.wait().status, stdout: String(decoding: stdout, as: UTF8.self),
        stderr: String(decoding: collected.err, as: UTF8.self))
}

// @unchecked Sendable: `err` is written once by the reader thread before `group.leave()`
// and read only after `group.wait()`, which orders the two.
private final class Collected: @unchecked Sendable {
    var err = Data()
    func setErr(_ data: Data) { err = data }
}

/// The repository root, found from this file's location.
public let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// The reference `safetensors` package, driven through scripts/st_reference.py.
public enum ReferencePython {
    /// `GRAFT_TEST_PYTHON`, else the repository's `.venv` (made by `make test`).
    public static var python: String {
        ProcessInfo.processInfo.environment["GRAFT_TEST_PYTHON"] ?? packageRoot + "/.venv/bin/python"
    }

    /// Runs the helper script and returns its stdout.
    ///
    /// - Throws: when Python is missing (run `make test`, which makes the venv) or the script fails.
    public static func run(_ arguments: [String]) throws -> String {
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw HelperError("no Python at \(python): run `make test` (it creates .venv with the reference safetensors)")
        }
        let result = try runProcess(python, [packageRoot + "/scripts/st_reference.py"] + arguments)
        guard result.status == 0 else { throw HelperError("st_reference.py \(arguments.first ?? "") failed: \(result.stderr)") }
        return result.stdout
    }
}

public struct HelperError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Random bytes.
public func randomBytes(_ count: Int, using generator: inout SeededGenerator) -> [UInt8] {
    generator.bytes(count)
}

/// One tensor per dtype with a random shape and random bytes; sub-byte types get an even
/// element count in whole bytes.
public func randomTensors(dtypes: [DType], seed: UInt64, prefix: String = "t") -> [TensorData] {
    var generator = SeededGenerator(seed: seed)
    return dtypes.enumerated().map { index, dtype in
        var shape = (0..<Int(generator.next() % 3 + 1)).map { _ in Int(generator.next() % 5 + 1) }
        if dtype.bitsPerElement < 8 { shape[shape.count - 1] *= 4 }  // 4 × 4 or 6 bits fills bytes
        let size = (try? dtype.byteCount(of: shape, tensor: "")) ?? 0
        return TensorData(
            name: "\(prefix)\(index).\(dtype.rawValue.lowercased())", dtype: dtype, shape: shape,
            bytes: randomBytes(size, using: &generator))
    }
}

/// Bytes of a safetensors file with the given raw JSON header and data.
public func rawSafetensors(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
    let json = Array(header.utf8)
    return rawSafetensors(headerBytes: json, data: data, declaredLength: declaredLength)
}

public func rawSafetensors(headerBytes json: [UInt8], data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
    var length = declaredLength ?? UInt64(json.count)
    var out: [UInt8] = []
    for _ in 0..<8 {
        out.append(UInt8(truncatingIfNeeded: length))
        length >>= 8
    }
    return out + json + data
}

/// Writes bytes to a file.
public func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// Every file under `path`, relative to it, sorted.
public func filesUnder(_ path: String) -> [String] {
    guard let enumerator = FileManager.default.enumerator(atPath: path) else { return [] }
    var files: [String] = []
    while let item = enumerator.nextObject() as? String {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path + "/" + item, isDirectory: &isDirectory), !isDirectory.boolValue {
            files.append(item)
        }
    }
    return files.sorted()
}

/// Lowercase hex SHA-256 of `bytes`.
public func sha256Hex(_ bytes: [UInt8]) -> String {
    SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
}
