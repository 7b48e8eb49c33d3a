#include "libbpf_log.h"

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <vector>

namespace fg
{

namespace
{

/*
 * Per thread, because batch map operations run on libuv worker threads
 * while open()/attach run on the main thread: each call's messages must end
 * up in that call's error only.
 */
thread_local LibbpfLogCapture *current = nullptr;

int Print(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	va_list copy;
	va_copy(copy, args);
	int n = vsnprintf(nullptr, 0, fmt, copy);
	va_end(copy);
	if (n <= 0)
		return 0;
	std::vector<char> buf(static_cast<size_t>(n) + 1);
	vsnprintf(buf.data(), buf.size(), fmt, args);
	std::string text(buf.data(), static_cast<size_t>(n));
	if (current) {
		current->Append(text);
	} else if (level == LIBBPF_WARN) {
		/* Nobody is collecting: a warning must not vanish silently. */
		fputs(text.c_str(), stderr);
	}
	return n;
}

} // namespace

void InstallLibbpfPrint()
{
	static std::once_flag once;
	std::call_once(once, [] { libbpf_set_print(Print); });
}

LibbpfLogCapture::LibbpfLogCapture() : prev_(current)
{
	current = this;
}

LibbpfLogCapture::~LibbpfLogCapture()
{
	current = prev_;
}

void LibbpfLogCapture::Append(const std::string &text)
{
	buf_ += text;
	if (buf_.size() > kLogTailBytes) {
		/* Keep the tail: the verifier's verdict is in its last lines. Cut at a line start. */
		size_t cut = buf_.size() - kLogTailBytes;
		size_t nl = buf_.find('\n', cut);
		buf_.erase(0, nl == std::string::npos ? cut : nl + 1);
	}
}

std::string LibbpfLogCapture::Text() const
{
	size_t end = buf_.find_last_not_of("\n ");
	return end == std::string::npos ? std::string() : buf_.substr(0, end + 1);
}

} // namespace fg
