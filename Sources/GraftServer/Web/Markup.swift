import Foundation

/// HTML whose interpolations are escaped unless they are markup themselves: `"<td>\(name)</td>"`
/// as a `Markup` escapes `name`, so text a user typed (a description, a note) can only ever show
/// as text. Trusted fragments are `Markup` values; `Markup(raw:)` is for constant markup only.
struct Markup: ExpressibleByStringInterpolation, Sendable, Equatable {
    private(set) var text: String

    init(raw text: String) { self.text = text }
    init(stringLiteral value: String) { text = value }
    init(stringInterpolation: StringInterpolation) { text = stringInterpolation.text }

    static let empty = Markup(raw: "")

    struct StringInterpolation: StringInterpolationProtocol {
        var text = ""
        init(literalCapacity: Int, interpolationCount: Int) { text.reserveCapacity(literalCapacity + 16 * interpolationCount) }
        mutating func appendLiteral(_ literal: String) { text += literal }
        /// Text: escaped.
        mutating func appendInterpolation(_ value: String) { text += escapeHTML(value) }
        mutating func appendInterpolation(_ value: Int) { text += String(value) }
        /// Anything else printable: its description, escaped.
        mutating func appendInterpolation(_ value: some CustomStringConvertible) { text += escapeHTML(value.description) }
        /// Markup: as it is.
        mutating func appendInterpolation(_ value: Markup) { text += value.text }
        mutating func appendInterpolation(_ values: [Markup]) { for value in values { text += value.text } }
    }

    static func + (a: Markup, b: Markup) -> Markup { Markup(raw: a.text + b.text) }
    static func += (a: inout Markup, b: Markup) { a.text += b.text }
}

extension Array where Element == Markup {
    func joined(separator: Markup = .empty) -> Markup {
        var out = Markup.empty
        for (index, item) in enumerated() {
            if index > 0 { out += separator }
            out += item
        }
        return out
    }
}

/// Escapes the five characters that matter in element content and quoted attribute values.
func escapeHTML(_ text: String) -> String {
    guard text.utf8.contains(where: { $0 == 0x26 || $0 == 0x3C || $0 == 0x3E || $0 == 0x22 || $0 == 0x27 }) else { return text }
    var out = ""
    out.reserveCapacity(text.utf8.count + 16)
    for scalar in text.unicodeScalars {
        switch scalar {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out
}

/// A path with a query string, every value percent-encoded (`nil` values left out).
func link(_ path: String, _ parameters: [(String, String?)] = []) -> String {
    let pairs = parameters.compactMap { key, value in value.map { "\(key)=\(percentEncode($0))" } }
    return pairs.isEmpty ? path : path + "?" + pairs.joined(separator: "&")
}

/// Percent-encodes everything but the unreserved characters of RFC 3986 (and `@`, which a
/// path segment may hold: `NAME@N` stays readable in links).
func percentEncode(_ text: String, keepAt: Bool = false) -> String {
    text.addingPercentEncoding(withAllowedCharacters: keepAt ? pathSafe : querySafe) ?? ""
}

private let querySafe: CharacterSet = {
    var allowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    allowed.insert(charactersIn: "-._~")
    return allowed
}()

private let pathSafe: CharacterSet = {
    var allowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    allowed.insert(charactersIn: "-._~@")
    return allowed
}()
