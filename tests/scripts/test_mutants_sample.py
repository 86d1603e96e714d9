"""The mutant generator of `make mutants-sample`: which changes it offers for which lines."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from mutants_sample import FILES, candidates, sample  # noqa: E402

SOURCE = '''import Foundation
// a comment: if a == b { }
/// a doc comment with a < b
func f(a: Int, b: Int, names: [String]) -> Bool {
    guard a >= 0 else { return false }
    guard let c = Optional(a) else { return false }
    if a == b && b != 3 {
        record(a)
    }
    let message = "a == b, true"
    let list = [1, 2, 3]
    let sql = """
        SELECT 1 WHERE a == b
        """
    return names.contains { $0 == "x" } || true
}
'''


def offered(kind):
    lines = SOURCE.split("\n")
    return [(number, new.strip()) for _, number, found, new in candidates("f.swift", lines) if found == kind]


def test_comparisons_and_logic_are_flipped_in_code_only():
    flips = offered("comparison")
    assert (5, "guard a < 0 else { return false }") in flips
    assert (7, "if a != b && b != 3 {") in flips and (7, "if a == b && b == 3 {") in flips
    assert all(number not in (2, 3, 10, 13) for number, _ in flips), "comments, strings and multi-line strings are left alone"
    assert (7, "if a == b || b != 3 {") in offered("logic")


def test_conditions_negated_and_guards_deleted_unless_they_bind():
    assert (5, "guard !(a >= 0) else { return false }") in offered("negate")
    assert (7, "if !(a == b && b != 3) {") in offered("negate")
    assert (5, "") in offered("guard")
    assert all(number != 6 for number, _ in offered("negate") + offered("guard")), "a binding guard cannot be negated or dropped"


def test_statements_elements_constants_and_booleans():
    assert (8, "") in offered("delete")
    assert all(number not in (4, 5, 10, 11) for number, _ in offered("delete")), "declarations and guards are not plain statements"
    elements = [new for number, new in offered("element") if number == 11]
    assert sorted(elements) == sorted(["let list = [2, 3]", "let list = [1, 3]", "let list = [1, 2]"])
    constants = offered("constant")
    assert (7, "if a == b && b != 4 {") in constants
    assert all("$1" not in new for _, new in constants), "closure parameters are not numbers"
    assert (15, 'return names.contains { $0 == "x" } || false') in offered("boolean")


def test_the_sample_is_seeded_and_covers_only_the_listed_files():
    first, total = sample(10, seed=7)
    again, _ = sample(10, seed=7)
    assert first == again and len(first) == 10 and total >= 10
    assert {path for path, _, _, _ in first} <= set(FILES)
    assert sample(10, seed=8)[0] != first
