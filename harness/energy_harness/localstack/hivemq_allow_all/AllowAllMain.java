// A HiveMQ extension that lets every client connect. HiveMQ CE refuses all clients unless a
// security extension is installed; the official distribution ships an equivalent one, the
// Maven artifact does not. For local test brokers only, bound to 127.0.0.1.
package dev.energypipeline.allowall;

import com.hivemq.extension.sdk.api.ExtensionMain;
import com.hivemq.extension.sdk.api.auth.SimpleAuthenticator;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartOutput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopOutput;
import com.hivemq.extension.sdk.api.services.Services;

public final class AllowAllMain implements ExtensionMain {
    @Override
    public void extensionStart(final ExtensionStartInput input, final ExtensionStartOutput output) {
        final SimpleAuthenticator allowAll = (authInput, authOutput) -> authOutput.authenticateSuccessfully();
        Services.securityRegistry().setAuthenticatorProvider(providerInput -> allowAll);
    }

    @Override
    public void extensionStop(final ExtensionStopInput input, final ExtensionStopOutput output) {
    }
}
