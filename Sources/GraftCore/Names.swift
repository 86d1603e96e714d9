/// A validated model name: 1–128 of letters, digits, `-`, `_` and `.`, not starting with `.`
/// or `-`; optionally under one namespace, as the Hub names models (`ORG/NAME`, the namespace
/// under the same rules).
///
/// Names are stored in the database and never become filesystem paths; the rules keep them
/// safe to print, to use in shell commands and to publish.
///
/// ```swift
/// let name = try ModelName("resnet18-imagenet")
/// ```
public struct ModelName: Sendable, Hashable, Comparable, CustomStringConvertible, Codable {
    public static let maximumLength = 128
    public let value: String

    /// - Throws: ``GraftError/invalidName(_:reason:)`` saying which rule the text breaks.
    public init(_ text: String) throws(GraftError) {
        // One namespace level, as the Hub names models: `ORG/NAME`, each part under the rules.
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2 else {
            throw .invalidName(text, reason: "a model name has at most one `/`, between a namespace and a name (ORG/NAME)")
        }
        if parts.count == 2 {
            // Each part under the rules; the message names what was typed, whole.
            do {
                try Self.check(String(parts[0]), what: "namespace")
                try Self.check(String(parts[1]), what: "model name")
            } catch {
                guard case .invalidName(_, let reason) = error else { throw error }
                throw .invalidName(text, reason: reason)
            }
        } else {
            try Self.check(text, what: "model name")
        }
        value = text
    }

    /// The namespace of `ORG/NAME`, or `nil`.
    public var namespace: String? { value.contains("/") ? String(value[..<value.firstIndex(of: "/")!]) : nil }

    /// A name read back from the registry, where only validated names are ever stored.
    package init(trusted text: String) { value = text }

    /// Checks `text` against the naming rules; used for names, aliases and ids alike.
    static func check(_ text: String, what noun: String) throws(GraftError) {
        let what = ("aeiou".contains(noun.first ?? "x") ? "an " : "a ") + noun
        guard !text.isEmpty else { throw .invalidName(text, reason: "\(what) cannot be empty") }
        guard text.utf8.count <= maximumLength else {
            throw .invalidName(text, reason: "\(what) is at most \(maximumLength) characters")
        }
        for byte in text.utf8 {
            let ok =
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
            guard ok else {
                throw .invalidName(text, reason: "\(what) may hold only ASCII letters, digits, `-`, `_` and `.`")
            }
        }
        guard let first = text.utf8.first, first != UInt8(ascii: "."), first != UInt8(ascii: "-") else {
            throw .invalidName(text, reason: "\(what) cannot start with `.` or `-`")
        }
    }

    public var description: String { value }
    public static func < (lhs: ModelName, rhs: ModelName) -> Bool { lhs.value < rhs.value }

    public init(from decoder: any Decoder) throws {
        try self.init(try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}

/// What a user types to name a model or one of its checkpoints.
///
/// - `NAME`: a model (commands that need a checkpoint take its latest)
/// - `NAME@N`: its N-th checkpoint; `NAME@latest`: its newest; `NAME@ALIAS`: an alias
/// - `sha256:HEX`: a checkpoint by content digest; a unique prefix of 12+ hex digits will do
///
/// ```swift
/// let ref = try Reference(parsing: "resnet18@3")
/// ```
public enum Reference: Sendable, Hashable, CustomStringConvertible {
    case model(ModelName)
    case number(ModelName, Int)
    case latest(ModelName)
    case alias(ModelName, String)
    case digest(prefix: String)

    /// - Throws: ``GraftError/invalidReference(_:reason:)`` or ``GraftError/invalidName(_:reason:)``.
    public init(parsing text: String) throws(GraftError) {
        if text.hasPrefix("sha256:") {
            let hex = String(text.dropFirst(7))
            guard (12...64).contains(hex.utf8.count), hex.utf8.allSatisfy(isLowerHex) else {
                throw .invalidReference(text, reason: "a digest reference is `sha256:` followed by 12 to 64 lowercase hex digits")
            }
            self = .digest(prefix: hex)
            return
        }
        let parts = text.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        let name = try ModelName(String(parts[0]))
        guard parts.count == 2 else {
            self = .model(name)
            return
        }
        let selector = String(parts[1])
        if selector == "latest" {
            self = .latest(name)
        } else if let number = Int(selector), selector.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            guard number >= 1 else { throw .invalidReference(text, reason: "checkpoint numbers start at 1") }
            self = .number(name, number)
        } else {
            do {
                try ModelName.check(selector, what: "alias")
            } catch {
                throw .invalidReference(text, reason: "after `@` comes a checkpoint number, `latest` or an alias (\(error.reasonText))")
            }
            self = .alias(name, selector)
        }
    }

    /// The model the reference names, if it names one.
    public var modelName: ModelName? {
        switch self {
        case .model(let name), .number(let name, _), .latest(let name), .alias(let name, _): name
        case .digest: nil
        }
    }

    public var description: String {
        switch self {
        case .model(let name): name.value
        case .number(let name, let n): "\(name)@\(n)"
        case .latest(let name): "\(name)@latest"
        case .alias(let name, let alias): "\(name)@\(alias)"
        case .digest(let prefix): "sha256:\(prefix)"
        }
    }
}

/// Free text a user gives: descriptions, provenance fields, advisory notes. Any Unicode but
/// control characters other than tab and line breaks — a NUL would cut the text short in C
/// interfaces, and escape sequences would reach whoever prints it — and at most `maxBytes`.
public enum FreeText {
    public static let maxBytes = 65_536

    /// - Throws: ``GraftError/invalidText(what:reason:)``, naming the field and the offset.
    public static func check(_ text: String?, what: String) throws(GraftError) {
        guard let text else { return }
        guard text.utf8.count <= maxBytes else {
            throw .invalidText(what: what, reason: "\(text.utf8.count) bytes; at most \(maxBytes)")
        }
        for (offset, scalar) in text.unicodeScalars.enumerated() where isControl(scalar) {
            let code = "U+" + String(scalar.value, radix: 16, uppercase: true).leftPadded(to: 4)
            throw .invalidText(what: what, reason: "control character \(code) at character \(offset)")
        }
    }

    /// C0 and C1 controls and DEL, but tab, line feed and carriage return (which free text may
    /// hold; a terminal escapes the carriage return too).
    public static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09, 0x0A, 0x0D: false
        case 0x00...0x1F, 0x7F...0x9F: true
        default: false
        }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
