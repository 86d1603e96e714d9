/// Why a file is not valid safetensors, or could not be read or written.
///
/// Each case carries what a user needs to find the problem; ``description`` is one line.
public enum SafeTensorsError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file is shorter than the 8-byte header-length prefix.
    case fileTooSmall(byteCount: Int)
    /// The declared header length exceeds the 100,000,000-byte cap.
    case headerTooLarge(declared: UInt64)
    /// The declared header length runs past the end of the file.
    case headerPastEndOfFile(declared: UInt64, fileSize: Int)
    /// The header is not valid UTF-8.
    case invalidUTF8(offset: Int)
    /// The header is not valid JSON, or not the JSON shape safetensors expects.
    case invalidJSON(String)
    /// A key appears twice in the same JSON object.
    case duplicateKey(String)
    /// `__metadata__` is not an object of string values.
    case invalidMetadata(String)
    /// A tensor entry lacks a field or has a field of the wrong type.
    case invalidTensorEntry(tensor: String, reason: String)
    /// A dtype the format does not define.
    case unknownDType(tensor: String, dtype: String)
    /// The tensor's size overflows when computed from shape and dtype.
    case sizeOverflow(tensor: String)
    /// A sub-byte dtype whose elements do not fill whole bytes.
    case misalignedSubByteTensor(tensor: String, dtype: DType, elements: Int)
    /// The offsets' span disagrees with the size computed from shape and dtype.
    case byteLengthMismatch(tensor: String, expected: Int, actual: Int)
    /// The offsets leave a gap, overlap another tensor, or run backwards.
    case invalidOffsets(tensor: String, begin: Int, end: Int, expectedBegin: Int)
    /// The tensors do not cover the data section exactly.
    case dataSectionMismatch(covered: Int, actual: Int)
    /// The file is a pickle-based checkpoint (PyTorch `.pt`/`.bin`/`.ckpt`), which is never loaded.
    case pickleCheckpoint(kind: String)
    /// A tensor name the writer cannot use.
    case invalidTensorName(String)
    /// A tensor's data does not match its declared size (writer side).
    case dataLengthMismatch(tensor: String, expected: Int, actual: Int)
    /// An operating-system call failed.
    case io(operation: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .fileTooSmall(let count):
            return "not a safetensors file: \(count) byte(s), too short for the 8-byte header length"
        case .headerTooLarge(let declared):
            return "not a safetensors file: header length \(declared) exceeds the 100,000,000-byte limit"
        case .headerPastEndOfFile(let declared, let size):
            return "not a safetensors file (or truncated): header length \(declared) runs past the end of the \(size)-byte file"
        case .invalidUTF8(let offset):
            return "invalid safetensors header: not UTF-8 (byte \(offset) of the header)"
        case .invalidJSON(let reason):
            return "invalid safetensors header: \(reason)"
        case .duplicateKey(let key):
            return "invalid safetensors header: key \(quoted(key)) appears more than once"
        case .invalidMetadata(let reason):
            return "invalid safetensors header: __metadata__ \(reason)"
        case .invalidTensorEntry(let tensor, let reason):
            return "invalid safetensors header: tensor \(quoted(tensor)): \(reason)"
        case .unknownDType(let tensor, let dtype):
            return "invalid safetensors header: tensor \(quoted(tensor)) has unknown dtype \(quoted(dtype))"
        case .sizeOverflow(let tensor):
            return "invalid safetensors header: tensor \(quoted(tensor)): shape × dtype size overflows"
        case .misalignedSubByteTensor(let tensor, let dtype, let elements):
            return
                "invalid safetensors header: tensor \(quoted(tensor)): \(elements) element(s) of \(dtype.rawValue) do not fill whole bytes"
        case .byteLengthMismatch(let tensor, let expected, let actual):
            return "invalid safetensors header: tensor \(quoted(tensor)) spans \(actual) byte(s) but its shape and dtype need \(expected)"
        case .invalidOffsets(let tensor, let begin, let end, let expectedBegin):
            let what =
                end < begin
                ? "run backwards"
                : begin < expectedBegin ? "overlap the previous tensor" : begin > expectedBegin ? "leave a gap before it" : "are invalid"
            return
                """
                invalid safetensors header: tensor \(quoted(tensor)) offsets [\(begin), \(end)] \(what) (expected it to start at\
                 \(expectedBegin))
                """
        case .dataSectionMismatch(let covered, let actual):
            if actual > covered {
                return
                    """
                    invalid safetensors file: \(actual - covered) trailing byte(s) after the last tensor (tensors cover \(covered) of\
                     \(actual) data bytes)
                    """
            }
            return "truncated safetensors file: tensors need \(covered) data bytes but the file holds \(actual)"
        case .pickleCheckpoint(let kind):
            return
                """
                refusing a \(kind): pickle is never loaded, because loading it can run arbitrary code. Convert it to safetensors\
                 first, e.g. `python -c \"import torch; from safetensors.torch import save_file; save_file(torch.load('IN',\
                 weights_only=True), 'OUT.safetensors')\"`
                """
        case .invalidTensorName(let name):
            return "invalid tensor name \(quoted(name)): names must be non-empty and not `__metadata__`"
        case .dataLengthMismatch(let tensor, let expected, let actual):
            return "tensor \(quoted(tensor)) has \(actual) byte(s) of data but its shape and dtype need \(expected)"
        case .io(let operation, let path, let code):
            return "\(operation) \(path): \(describeErrno(code))"
        }
    }
}

/// User or file text made safe to print in a one-line message: wrapped in backticks, control
/// characters and bidirectional-override marks escaped, length bounded.
public func quoted(_ text: String, limit: Int = 200) -> String {
    var out = "`"
    for scalar in text.unicodeScalars.prefix(limit) {
        let value = scalar.value
        if value < 0x20 || value == 0x7F || (0x200E...0x202E).contains(value) || (0x2066...0x2069).contains(value) {
            out += "\\u{\(String(value, radix: 16))}"
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return out + (text.unicodeScalars.count > limit ? "…`" : "`")
}
