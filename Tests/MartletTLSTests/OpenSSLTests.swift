import CMartletOpenSSL
import MartletTLS
import Testing

@Suite struct OpenSSLTests {
    @Test func linksAgainstOpenSSL3() {
        #expect(OpenSSL.initialized)
        #expect(OpenSSL.versionNumber >= 0x3000_0000)
        #expect(OpenSSL.versionString.hasPrefix("OpenSSL 3"))
    }

    @Test func shimsExposeMacroConstants() {
        #expect(CMartletOpenSSL_SSL_OP_NO_COMPRESSION() == UInt64(1) << 17)
        #expect(CMartletOpenSSL_SSL_OP_NO_TICKET() == UInt64(1) << 14)
    }
}
