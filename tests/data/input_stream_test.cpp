// InputStream: gzip and zstd files (written here with zlib and libzstd) read back byte for byte
// whatever the read size, several members or frames, and every damaged file — truncated,
// corrupt, trailing bytes, a name that promises another format — one sentence naming the file.
#include "data/input_stream.h"

#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <random>
#include <string>

#include "data/token_data_util.h"

namespace loom {
namespace {

using testing::TempDir;
using testing::user_error_of;
using testing::write_bytes;

// Lines of random words: compressible, and over several read chunks (1 MiB) when long.
std::string random_text(size_t bytes, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> letter('a', 'z'), length(1, 9), end(0, 11);
  std::string text;
  while (text.size() < bytes) {
    for (int n = length(gen); n > 0; --n) text += static_cast<char>(letter(gen));
    text += end(gen) == 0 ? '\n' : ' ';
  }
  return text;
}

std::string gzip(const std::string& text) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, text.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  z.avail_in = static_cast<uInt>(text.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// With a content checksum, as the zstd command writes by default.
std::string zstd(const std::string& text) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
  std::string out(ZSTD_compressBound(text.size()), '\0');
  const size_t n = ZSTD_compress2(c, out.data(), out.size(), text.data(), text.size());
  EXPECT_FALSE(ZSTD_isError(n));
  ZSTD_freeCCtx(c);
  out.resize(n);
  return out;
}

// The whole stream, read `chunk` bytes at a time; checks the file's bytes were all consumed.
std::string read_all(const std::string& path, size_t chunk) {
  InputStream in(path);
  std::string out;
  while (in.read(out, chunk) > 0) {
  }
  EXPECT_EQ(in.file_bytes_read(), testing::read_bytes(path).size()) << path;
  return out;
}

TEST(InputStreamTest, GzipAndZstdReadBackWhateverTheReadSize) {
  TempDir dir("input_stream");
  const std::string text = random_text(size_t{3} << 20, 1);
  write_bytes(dir / "a.txt", text);
  write_bytes(dir / "a.txt.gz", gzip(text));
  write_bytes(dir / "a.txt.zst", zstd(text));
  for (const char* name : {"a.txt", "a.txt.gz", "a.txt.zst"}) {
    for (const size_t chunk : {size_t{1}, size_t{4093}, size_t{1} << 20, size_t{8} << 20}) {
      if (chunk == 1 && std::string(name) != "a.txt") continue;  // a byte at a time: slow, and no different
      EXPECT_TRUE(read_all(dir / name, chunk) == text) << name << " in reads of " << chunk;
    }
  }
  EXPECT_EQ(InputStream(dir / "a.txt").compression(), Compression::kNone);
  EXPECT_EQ(InputStream(dir / "a.txt.gz").compression(), Compression::kGzip);
  EXPECT_EQ(InputStream(dir / "a.txt.zst").compression(), Compression::kZstd);
  // The first bytes decide: compressed data under a plain name is decompressed.
  write_bytes(dir / "renamed", gzip(text));
  EXPECT_TRUE(read_all(dir / "renamed", size_t{1} << 20) == text);
}

TEST(InputStreamTest, SeveralMembersOrFramesAndEmptyContent) {
  TempDir dir("input_stream_members");
  const std::string a = random_text(70000, 2), b = random_text(50000, 3);
  write_bytes(dir / "ab.gz", gzip(a) + gzip("") + gzip(b));
  write_bytes(dir / "ab.zst", zstd(a) + zstd("") + zstd(b));
  EXPECT_TRUE(read_all(dir / "ab.gz", 4096) == a + b);
  EXPECT_TRUE(read_all(dir / "ab.zst", 4096) == a + b);
  write_bytes(dir / "empty.gz", gzip(""));
  write_bytes(dir / "empty.zst", zstd(""));
  EXPECT_EQ(read_all(dir / "empty.gz", 100), "");
  EXPECT_EQ(read_all(dir / "empty.zst", 100), "");
}

TEST(InputStreamTest, DamagedFilesAreOneSentenceNamingTheFile) {
  TempDir dir("input_stream_bad");
  const std::string text = random_text(200000, 4);
  const auto error_of = [&](const std::string& name, const std::string& bytes) {
    write_bytes(dir / name, bytes);
    return user_error_of([&] { read_all(dir / name, 1 << 16); });
  };
  const std::string gz = gzip(text), zs = zstd(text);
  EXPECT_EQ(error_of("cut.gz", gz.substr(0, gz.size() / 2)),
            "input file " + (dir / "cut.gz") + " ends inside its gzip data after " + std::to_string(gz.size() / 2) +
                " bytes (a truncated file); fetch or compress it again, or leave it out");
  EXPECT_EQ(error_of("cut.zst", zs.substr(0, zs.size() - 3)),
            "input file " + (dir / "cut.zst") + " ends inside its zstd data after " + std::to_string(zs.size() - 3) +
                " bytes (a truncated file); fetch or compress it again, or leave it out");
  std::string flipped = gz;
  flipped[gz.size() / 2] = static_cast<char>(flipped[gz.size() / 2] ^ 0x55);
  std::string message = error_of("flipped.gz", flipped);
  EXPECT_NE(message.find("input file " + (dir / "flipped.gz") + " is not valid gzip data near byte offset"),
            std::string::npos) << message;
  EXPECT_NE(message.find("a damaged file"), std::string::npos) << message;
  flipped = zs;
  flipped[zs.size() / 2] = static_cast<char>(flipped[zs.size() / 2] ^ 0x55);
  message = error_of("flipped.zst", flipped);
  EXPECT_NE(message.find("input file " + (dir / "flipped.zst") + " is not valid zstd data near byte offset"),
            std::string::npos) << message;
  // A changed CRC-32 at the end: every data byte decodes, the check fails.
  flipped = gz;
  flipped[gz.size() - 6] = static_cast<char>(flipped[gz.size() - 6] ^ 1);
  message = error_of("crc.gz", flipped);
  EXPECT_NE(message.find("(incorrect data check)"), std::string::npos) << message;
  EXPECT_EQ(error_of("trailing.gz", gz + "garbage"),
            "input file " + (dir / "trailing.gz") + " has bytes after its last gzip member, at byte offset " +
                std::to_string(gz.size()) + " that are not gzip data: a damaged file; compress it again, or leave it out");
  EXPECT_NE(error_of("trailing.zst", zs + "garbage").find("is not valid zstd data"), std::string::npos);

  EXPECT_EQ(error_of("plain.txt.gz", text),
            "input file " + (dir / "plain.txt.gz") +
                " is named as gzip data but does not start with the gzip magic bytes 1f 8b; recompress it or rename it");
  EXPECT_EQ(error_of("gzip.zst", gz),
            "input file " + (dir / "gzip.zst") +
                " is named as zstd data but does not start with the zstd magic bytes 28 b5 2f fd; recompress it or "
                "rename it");
  EXPECT_EQ(error_of("nothing.gz", ""),
            "input file " + (dir / "nothing.gz") + " is named as gzip data but is empty; recompress it or rename it");
  EXPECT_EQ(error_of("text.xz", text),
            "input file " + (dir / "text.xz") +
                " is named .xz, a compression Loom does not read; decompress it, or recompress it with gzip or zstd");
  EXPECT_EQ(user_error_of([&] { InputStream in(dir / "missing.gz"); }),
            "cannot read input file " + (dir / "missing.gz") + ": No such file or directory");
}

TEST(InputStreamTest, UncompressedNameDropsOneCompressionSuffix) {
  EXPECT_EQ(uncompressed_name("a/b.jsonl.gz"), "a/b.jsonl");
  EXPECT_EQ(uncompressed_name("b.jsonl.zst"), "b.jsonl");
  EXPECT_EQ(uncompressed_name("b.jsonl.zstd"), "b.jsonl");
  EXPECT_EQ(uncompressed_name("b.jsonl"), "b.jsonl");
  EXPECT_EQ(uncompressed_name(".gz"), ".gz");
}

}  // namespace
}  // namespace loom
