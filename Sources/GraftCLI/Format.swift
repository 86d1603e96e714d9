import Foundation
import Graft

/// Human output goes through here: it shadows Swift's `print` in this module, so every line the
/// CLI prints for a person is escaped in one place. Text from the registry or a server — a
/// description, a provenance field, an advisory note, a server's message — may hold control
/// characters, and an escape sequence (ESC, OSC, a carriage return over a line) must never reach
/// the terminal: each is written visibly as `\u{1B}`. Line feeds and tabs pass. JSON output
/// (``printJSON(_:)``) is escaped by the JSON encoder instead.
func print(_ items: Any..., separator: String = " ", terminator: String = "\n") {
    Swift.print(Terminal.escaped(items.map { "\($0)" }.joined(separator: separator)), terminator: terminator)
}

/// Text made safe for a terminal.
enum Terminal {
    /// `text` with every control character but line feed and tab (C0, DEL, C1) written as
    /// `\u{XX}`.
    static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var result = ""
        for scalar in text.unicodeScalars {
            if isControl(scalar) {
                result += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    /// Free text's controls (``FreeText/isControl(_:)``) and the carriage return, which would
    /// write over the line.
    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar == "\r" || FreeText.isControl(scalar)
    }
}

/// Writes `value` in the library's JSON contract (``GraftJSON``), pretty, followed by a newline.
func printJSON(_ value: some Encodable) throws {
    let data = try GraftJSON.encoder(pretty: true).encode(value)
    FileHandle.standardOutput.write(data + Data("\n".utf8))
}

/// Left-aligned columns separated by two spaces; numeric columns given in `right` align right.
func table(_ header: [String], _ rows: [[String]], right: Set<Int> = []) -> String {
    let all = [header] + rows
    let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
    return all.map { row in
        row.enumerated().map { column, cell in
            let pad = String(repeating: " ", count: widths[column] - cell.count)
            return right.contains(column) ? pad + cell : (column == row.count - 1 ? cell : cell + pad)
        }.joined(separator: "  ")
    }.joined(separator: "\n")
}

func shapeText(_ shape: [Int]) -> String { "[" + shape.map(String.init).joined(separator: ", ") + "]" }

/// A signature in one line: verified or not, by which key, over how many files.
func describe(_ signature: SignatureInfo) -> String {
    let key = signature.keyHint.map { "key " + $0.prefix(12) + "…" } ?? "no key hint"
    let state = signature.verified ? "verified" : "signed, not verified"
    let how =
        signature.origin == "graft" ? "signed by graft sign at \(signature.signedAt)" : "came with the directory, \(signature.signedAt)"
    return "\(state) (\(key), \(signature.files) files, root sha256:\(signature.rootDigest.hex.prefix(12))…; \(how))"
}

/// Progress lines on stderr (`COMMAND: …`), at most one a second, once a command has run two
/// seconds, with the time left estimated from the share done.
final class ProgressLines: @unchecked Sendable {
    private let command: String
    private let lock = NSLock()
    private let start = Date()
    private var last = Date.distantPast
    private var printed = false

    init(_ command: String) { self.command = command }

    /// `text` says what is done; `done` of `total` (in any unit) estimates the time left.
    func report(done: Int, total: Int, _ text: String) {
        lock.lock()
        defer { lock.unlock() }
        let now = Date()
        let elapsed = now.timeIntervalSince(start)
        guard elapsed >= 2, now.timeIntervalSince(last) >= 1 else { return }
        last = now
        printed = true
        var line = "\(command): \(text)"
        if done > 0, total > done {
            line += ", about \(Int((elapsed * Double(total - done) / Double(done)).rounded(.up))) s left"
        }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    func finish() {
        lock.lock()
        defer { lock.unlock() }
        if printed { FileHandle.standardError.write(Data("\(command): done\n".utf8)) }
    }
}
