#pragma pack(push, 2)
struct pk1 { char c; int x __attribute__((aligned(8))); double d; };
#pragma pack(pop)
#pragma pack(4)
struct __attribute__((packed, aligned(4))) pk2 { char c; int x; } __attribute__((aligned(8)));
#pragma pack()
typedef int al16 __attribute__((__aligned__(16)));
typedef al16 al4 __attribute__((aligned(4)));
typedef char c4[3] __attribute__((aligned(4)));
struct m1 { char c; _Alignas(long long) int x; int * __attribute__((aligned(16))) p; al4 y[2]; };
union u1 { char c; int x __attribute__((packed)); } __declspec(align(8));
enum e1 { E1 = 0xffffffffu, E2 = -1u >> 1, E3 = (unsigned char)-1, E4 = 1 ? 2 : 1 / 0 };
enum e2 { F1 = 1LL << 40, F2, F3 = '\x41' + '\101' };
static const unsigned short K1 = 70000, K2 = sizeof(struct m1) * 3u;
typedef char arr[(unsigned)-1 / 2 >> 20][K2 % 7 + 1];
