import Testing

@testable import GraftLocal

/// Where export, a signature and a backup put their temporary names: beside the destination,
/// on its file system, so the final rename is atomic.
@Suite("FileSystem.parentAndName")
struct FileSystemPathTests {
    @Test("the folder holding a path and its last component, for relative, absolute, root-level and slash-ended paths")
    func split() {
        #expect(FileSystem.parentAndName("out.safetensors") == (".", "out.safetensors"))
        #expect(FileSystem.parentAndName("a/b/out") == ("a/b", "out"))
        #expect(FileSystem.parentAndName("/data/exports/bert/") == ("/data/exports", "bert"))
        #expect(FileSystem.parentAndName("/bert") == ("/", "bert"), "at the root the folder is /, never an empty (relative) one")
        #expect(FileSystem.parentAndName("./x") == (".", "x"))
    }
}
