// Runs the fuzz harness on saved inputs, without libFuzzer: every file named on the command
// line, or every file inside a directory named there. Used by ctest to replay the corpus and
// every input that once crashed or disagreed.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

int replay(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  int count = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path path(argv[i]);
    if (std::filesystem::is_directory(path)) {
      for (const auto& entry : std::filesystem::directory_iterator(path)) {
        if (entry.is_regular_file()) count += replay(entry.path());
      }
    } else if (std::filesystem::exists(path)) {
      count += replay(path);
    } else {
      std::fprintf(stderr, "kd_fuzz_replay: no such file or directory: %s\n", argv[i]);
      return 2;
    }
  }
  std::printf("kd_fuzz_replay: %d inputs replayed, all agreed\n", count);
  return count > 0 ? 0 : 1;
}
