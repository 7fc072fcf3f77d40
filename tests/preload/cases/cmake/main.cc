// SPDX-License-Identifier: MIT
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "checksum.h"

int main() {
    std::vector<std::string> words;
    for (int i = 0; i < 5000; ++i)
        words.push_back("w" + std::to_string(i * 7919 % 5000));
    std::string text;
    for (const auto& w : words)
        text += (text.empty() ? "" : " ") + w;
    char* rev = reverse_words(text.c_str());
    if (rev == nullptr)
        return 1;
    std::map<char, int> last_digits;
    for (const char* p = rev; *p; ++p) {
        if (*p >= '0' && *p <= '9')
            ++last_digits[*p];
    }
    std::cout << "words " << words.size() << " chars " << text.size() << '\n';
    std::cout << "adler32 " << adler32(reinterpret_cast<const unsigned char*>(rev), text.size())
              << '\n';
    std::cout << "reversed starts " << std::string(rev, 20) << '\n';
    for (const auto& [d, n] : last_digits)
        std::cout << d << '=' << n << ' ';
    std::cout << '\n';
    std::free(rev);
    return 0;
}
