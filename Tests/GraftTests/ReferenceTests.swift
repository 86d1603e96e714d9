import Foundation
import GraftTestSupport
import Testing

@testable import Graft
@testable import GraftCore
@testable import GraftLocal
@testable import GraftSQLite

@Suite("Names and references")
struct NameTests {
    @Test(
        "valid names, one namespace level included (the Hub's ORG/NAME)",
        arguments: [
            "resnet18", "bert-base_uncased.v2", "A", "9lives", String(repeating: "x", count: 128), "google/bert-base-uncased", "a/b",
        ])
    func validNames(_ text: String) throws {
        #expect(try ModelName(text).value == text)
    }

    @Test(
        "invalid names are refused: path tricks, control and direction characters, look-alikes, length",
        arguments: [
            "", "../etc", "a/b/c", "a/", "/b", "org/.x", "org/-x", "/abs", "a\\b", ".hidden", "-flag", "a b", "tab\there", "nul\u{0}x",
            "rtl\u{202E}gpj", "café",
            "раз", "ｆｕｌｌ", String(repeating: "x", count: 129), "a@b", "a:b", "~home",
        ])
    func invalidNames(_ text: String) {
        #expect { _ = try ModelName(text) } throws: { error in
            if case GraftError.invalidName = error { true } else { false }
        }
    }

    @Test("references parse into their kinds")
    func references() throws {
        #expect(try Reference(parsing: "m") == .model(ModelName("m")))
        #expect(try Reference(parsing: "m@3") == .number(ModelName("m"), 3))
        #expect(try Reference(parsing: "m@latest") == .latest(ModelName("m")))
        #expect(try Reference(parsing: "m@production") == .alias(ModelName("m"), "production"))
        #expect(try Reference(parsing: "sha256:0123456789ab") == .digest(prefix: "0123456789ab"))
        #expect(try Reference(parsing: "m@3").description == "m@3")
        #expect(try Reference(parsing: "org/m@2") == .number(ModelName("org/m"), 2))
        #expect(try ModelName("org/m").namespace == "org" && ModelName("m").namespace == nil)
    }

    @Test(
        "bad references are refused",
        arguments: ["m@0", "m@", "m@-1", "m@a/b", "@3", "sha256:0123", "sha256:0123456789AB", "sha256:xyz456789abcd", "../m@1", "m@1@2"])
    func badReferences(_ text: String) {
        // A bad name part is refused as a name; anything else as a reference.
        let expected = text.hasPrefix("@") || text.hasPrefix("..") ? "invalidName" : "invalidReference"
        #expect { _ = try Reference(parsing: text) } throws: { caseName($0) == expected }
    }

    @Test("digests parse only as sha256 and 64 lowercase hex digits")
    func digests() throws {
        let hex = String(repeating: "ab", count: 32)
        #expect(try Digest(parsing: "sha256:" + hex).hex == hex)
        #expect { _ = try Digest(parsing: "sha256:" + hex.uppercased()) } throws: { caseName($0) == "invalidReference" }
        #expect { _ = try Digest(parsing: "md5:" + hex) } throws: { caseName($0) == "invalidReference" }
        #expect { _ = try Digest(parsing: "sha256:" + hex.dropLast()) } throws: { caseName($0) == "invalidReference" }
        #expect(Digest.of(Array("abc".utf8)).hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test("numeric-aware ordering puts layer.2 before layer.10")
    func numericOrder() {
        let names = ["layer.10.weight", "layer.2.weight", "layer.1.bias", "classifier", "layer.02.x", "layer.2"]
        #expect(
            names.sorted(by: numericAwareLess) == [
                "classifier", "layer.1.bias", "layer.2", "layer.2.weight", "layer.02.x", "layer.10.weight",
            ])
    }
}

@Suite("Resolving references")
struct ResolveTests {
    @Test("NAME, NAME@N, NAME@latest and digest prefixes find the checkpoint")
    func resolves() async throws {
        let test = try await TestRegistry()
        let result = try await test.registry.addBase(name: ModelName("cnn"), file: try test.writeBase())
        for text in ["cnn", "cnn@1", "cnn@latest", "sha256:" + result.digest.hex.prefix(12), result.digest.description] {
            #expect(try await test.registry.checkpoint(Reference(parsing: text)).checkpoint.ref == "cnn@1", "\(text)")
        }
    }

    @Test("missing models, checkpoints, digests and aliases say what exists")
    func notFound() async throws {
        let test = try await TestRegistry()
        _ = try await test.registry.addBase(name: ModelName("resnet18"), file: try test.writeBase())
        await #expect { _ = try await test.registry.checkpoint(Reference(parsing: "resnet81")) } throws: { error in
            guard case GraftError.modelNotFound(_, let suggestions) = error else { return false }
            return suggestions == ["resnet18"] && error.localizedDescription.isEmpty == false
        }
        await #expect { _ = try await test.registry.checkpoint(Reference(parsing: "resnet18@2")) } throws: { error in
            guard case GraftError.checkpointNotFound(_, let available) = error else { return false }
            return available.contains("1–1")
        }
        await #expect { _ = try await test.registry.checkpoint(Reference(parsing: "sha256:000000000000")) } throws: { error in
            if case GraftError.digestNotFound = error { true } else { false }
        }
        await #expect { _ = try await test.registry.checkpoint(Reference(parsing: "resnet18@prod")) } throws: { error in
            if case GraftError.aliasNotFound = error { true } else { false }
        }
        await #expect { _ = try await test.registry.model(ModelName("zzz")) } throws: { error in
            if case GraftError.modelNotFound(_, let suggestions) = error { suggestions.isEmpty } else { false }
        }
    }
}
