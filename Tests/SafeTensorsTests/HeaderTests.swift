import Foundation
import GraftTestSupport
import SafeTensors
import Testing

@Suite("Header validation")
struct HeaderTests {
    @Test("hostile inputs are refused with their specific error", arguments: hostileCases)
    func refusesHostileInput(_ hostile: HostileCase) throws {
        let directory = TemporaryDirectory()
        let path = directory.file("input.safetensors")
        try writeFile(path, hostile.bytes)
        do {
            _ = try SafeTensorsReader(path: path)
            Issue.record("reader accepted \(hostile.label)")
        } catch {
            #expect(hostile.expect(error), "reader: \(error)")
            #expect(!error.description.contains("\n"), "errors are one line")
        }
        do {
            _ = try MappedSafeTensors(path: path)
            Issue.record("mapped reader accepted \(hostile.label)")
        } catch {
            #expect(hostile.expect(error), "mapped reader: \(error)")
        }
    }

    @Test("a pickle named .pt gets advice to convert, never a load")
    func pickleAdvice() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("model.pt")
        try writeFile(path, Array("junk that is not safetensors".utf8))
        #expect {
            _ = try SafeTensorsReader(path: path)
        } throws: { error in
            guard let error = error as? SafeTensorsError, case .pickleCheckpoint = error else { return false }
            return error.description.contains("safetensors") && error.description.contains("never loaded")
        }
    }

    @Test("edge cases the format allows are accepted")
    func acceptsEdgeCases() throws {
        let directory = TemporaryDirectory()
        let cases: [(String, [UInt8], Int)] = [
            ("empty header", rawSafetensors(header: "{}"), 0),
            ("whitespace around JSON", rawSafetensors(header: "  {}    "), 0),
            ("null metadata", rawSafetensors(header: #"{"__metadata__":null}"#), 0),
            ("scalar", rawSafetensors(header: #"{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#, data: [0, 0, 128, 63]), 1),
            (
                "zero-size tensors sharing an offset",
                rawSafetensors(
                    header: #"{"a":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#
                ), 2
            ),
            (
                "unknown fields ignored",
                rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":[1]}}"#, data: [9]), 1
            ),
            (
                "escaped unicode name",
                rawSafetensors(header: #"{"caf\u00e9.\ud83d\ude00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, data: [9]), 1
            ),
        ]
        for (label, bytes, count) in cases {
            let path = directory.file("ok.safetensors")
            try writeFile(path, bytes)
            let reader = try SafeTensorsReader(path: path)
            #expect(reader.header.tensors.count == count, "\(label)")
            #expect(reader.headerBytes == Array(bytes.prefix(reader.header.dataStart)), "\(label)")
        }
        let path = directory.file("unicode.safetensors")
        try writeFile(
            path, rawSafetensors(header: #"{"caf\u00e9.\ud83d\ude00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, data: [9]))
        #expect(try SafeTensorsReader(path: path).header.tensors.first?.name == "café.😀")
    }

    @Test("tensors come back in data order with their metadata")
    func dataOrderAndMetadata() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("m.safetensors")
        try writeFile(
            path,
            rawSafetensors(
                header:
                    #"{"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"__metadata__":{"z":"1","a":"2"},"#
                    + #""a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
                data: [5, 6]))
        let reader = try SafeTensorsReader(path: path)
        #expect(reader.header.tensors.map(\.name) == ["a", "b"])
        #expect(reader.header.metadata?.map(\.key) == ["z", "a"])
        #expect(try reader.data(of: reader.header.tensors[1]) == [6])
    }

    @Test("a file that is missing or a directory is an I/O error, not a format error")
    func ioErrors() throws {
        let directory = TemporaryDirectory()
        #expect(throws: SafeTensorsError.self) { _ = try SafeTensorsReader(path: directory.file("absent")) }
        do {
            _ = try SafeTensorsReader(path: directory.path)
            Issue.record("opened a directory")
        } catch {
            guard case .io = error else { Issue.record("expected an I/O error, got \(error)"); return }
        }
    }
}
