/*
 * libbpf_log.h — route libbpf's messages into the error that caused them.
 * libbpf prints the verifier log (and why a load or attach failed) through
 * its print callback; a LibbpfLogCapture on the stack collects what the
 * current thread prints (the last kLogTailBytes of it) so the thrown Error
 * can carry the verifier's last lines instead of a bare "EACCES".
 */
#pragma once

#include <string>

namespace fg
{

constexpr size_t kLogTailBytes = 4096;

/* Install the process-wide print callback (idempotent). */
void InstallLibbpfPrint();

class LibbpfLogCapture
{
public:
	LibbpfLogCapture();
	~LibbpfLogCapture();
	LibbpfLogCapture(const LibbpfLogCapture &) = delete;
	LibbpfLogCapture &operator=(const LibbpfLogCapture &) = delete;

	void Append(const std::string &text);
	/* What libbpf printed so far (bounded tail), trailing newlines trimmed. */
	std::string Text() const;

private:
	std::string buf_;
	LibbpfLogCapture *prev_;
};

} // namespace fg
