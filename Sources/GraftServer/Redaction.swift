import Foundation
import GraftCore

/// What a confined token must not read by name: the models its pattern does not match and the
/// advisories recorded on them. Every answer a confined request produces — JSON, text (DOT,
/// Mermaid, trees) and pages — passes through it on its way out (``jsonResponse(_:status:)``,
/// ``textResponse(_:type:)``, ``Web/htmlResponse(_:status:)``), so a visible model's parent,
/// lineage path, card `base_model` or inherited advisory never names what the token cannot see:
/// each such name reads `(hidden)` instead. The route table sets it for the request
/// (``current``); unconfined requests have none and pay nothing.
struct Redaction: Sendable {
    static let placeholder = "(hidden)"

    let hidden: Set<String>

    @TaskLocal static var current: Redaction?

    /// The names `visibility` does not show among every model and advisory of the registry; `nil`
    /// when nothing is hidden.
    static func of(_ registry: Registry, visibility: ModelVisibility) async throws(GraftError) -> Redaction? {
        guard !visibility.showsAll else { return nil }
        var hidden = Set<String>()
        for model in try await registry.models() where !visibility.shows(model.name.value) { hidden.insert(model.name.value) }
        for advisory in try await registry.advisories(includeResolved: true) where !visibility.shows(advisory.model) {
            hidden.insert(advisory.id)
        }
        return hidden.isEmpty ? nil : Redaction(hidden: hidden)
    }

    /// `text` with every whole name in ``hidden`` replaced: a name is a maximal run of the
    /// characters names are made of (letters, digits, `.`, `-`, `_`), so `cnn` goes in
    /// `cnn@1` and `a → cnn`, and stays in `cnn-ft`.
    func text(_ text: String) -> String {
        var result = ""
        var run = ""
        func flush() {
            result += hidden.contains(run) ? Self.placeholder : run
            run = ""
        }
        for character in text {
            if character.isASCII, character.isLetter || character.isNumber || character == "." || character == "-" || character == "_" {
                run.append(character)
            } else {
                flush()
                result.append(character)
            }
        }
        flush()
        return result
    }

    /// Keys whose values are enumerations of the JSON contract (a model named `base` must not
    /// turn every `"kind": "base"` into a placeholder).
    static let enumeratedKeys: Set<String> = [
        "kind", "relation", "mode", "transfer_mode", "state", "scope", "direction", "direction_inferred", "severity", "error", "dtype",
        "rule", "action", "status", "change",
    ]

    /// A JSON document with ``text(_:)`` applied to every string value but those of
    /// ``enumeratedKeys`` (keys stay).
    func json(_ data: Data) -> Data {
        guard let object = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else { return data }
        func walk(_ value: Any, key: String?) -> Any {
            switch value {
            case let string as String: return key.map(Self.enumeratedKeys.contains) == true ? string : text(string)
            case let array as [Any]: return array.map { walk($0, key: key) }
            case let object as [String: Any]: return Dictionary(uniqueKeysWithValues: object.map { ($0.key, walk($0.value, key: $0.key)) })
            default: return value
            }
        }
        return (try? JSONSerialization.data(withJSONObject: walk(object, key: nil), options: [.fragmentsAllowed, .sortedKeys])) ?? data
    }

    /// A page with ``text(_:)`` applied to its text and to the values of `href`, `title` and
    /// `data-*` attributes; tags, classes and other attributes stay as they are.
    func html(_ page: String) -> String {
        var result = ""
        var rest = Substring(page)
        while let open = rest.firstIndex(of: "<") {
            result += text(String(rest[..<open]))
            guard let close = rest[open...].firstIndex(of: ">") else {
                rest = rest[open...]
                break
            }
            result += tag(String(rest[open...close]))
            rest = rest[rest.index(after: close)...]
        }
        result += text(String(rest))
        return result
    }

    private func tag(_ tag: String) -> String {
        var result = ""
        var rest = Substring(tag)
        // Attribute values in double quotes (the pages' only form): those that name things.
        while let quote = rest.firstIndex(of: "\"") {
            let before = rest[..<quote]
            result += before
            guard let end = rest[rest.index(after: quote)...].firstIndex(of: "\"") else {
                rest = rest[quote...]
                break
            }
            let value = String(rest[rest.index(after: quote)..<end])
            let name = before.split(whereSeparator: { $0 == " " || $0 == "=" }).last.map(String.init) ?? ""
            let names = name == "href" || name == "title" || name.hasPrefix("data-")
            result += "\"" + (names ? text(value) : value) + "\""
            rest = rest[rest.index(after: end)...]
        }
        return result + rest
    }
}
